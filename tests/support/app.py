"""Definitions used by the engine tests (importable, so Dagster can reconstruct the jobs).

Listener behaviour is steered through module globals: tests run the sync job with the in-process
executor, so steps run in the test's own process and see these values.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from dagster import Definitions

from integrations_dagster import (
    Integration,
    Provider,
    RateLimited,
    SyncCompleted,
    SyncItemEvent,
    SyncItemFailed,
    SyncSession,
    SyncSettings,
    build_definitions,
)
from providers.synthetic import SyntheticItem, SyntheticProvider

LOCK = threading.Lock()
POISON: set[str] = set()  # external ids whose listener raises
RATE_LIMITED: Counter[str] = Counter()  # external id -> how many more times to raise RateLimited
FLAKY: Counter[str] = Counter()  # external id -> how many more times to raise a genuine error
CALLS: Counter[str] = Counter()
SEEN: list[str] = []
COMPLETED: list[SyncCompleted] = []
FAILED: list[SyncItemFailed] = []
ASYNC_MODE = {"on": False}


def reset() -> None:
    POISON.clear()
    RATE_LIMITED.clear()
    FLAKY.clear()
    CALLS.clear()
    SEEN.clear()
    COMPLETED.clear()
    FAILED.clear()
    ASYNC_MODE["on"] = False


def record(event: SyntheticItem) -> None:
    with LOCK:
        CALLS[event.external_id] += 1
        if RATE_LIMITED[event.external_id] > 0:
            RATE_LIMITED[event.external_id] -= 1
            raise RateLimited(0.01)
        if FLAKY[event.external_id] > 0:
            FLAKY[event.external_id] -= 1
            raise RuntimeError(f"flaky failure for {event.external_id}")
        if event.external_id in POISON or event.poisoned:
            from integrations_dagster import current_sync

            token = current_sync().integration.credentials.get("token", "")
            raise ValueError(f"poisoned item {event.external_id}" + (f" (calling with {token})" if token else ""))
        SEEN.append(event.external_id)


async def async_record(event: SyntheticItem) -> None:  # refused by the engine
    SEEN.append(event.external_id)


def on_completed(event: SyncCompleted) -> None:
    COMPLETED.append(event)


def on_failed(event: SyncItemFailed) -> None:
    FAILED.append(event)


class StreamEvent(SyncItemEvent):
    stream: str
    at: str


class TwoStreamProvider(Provider):
    """A provider with a structured cursor: one timestamp per stream, reduced per stream."""

    key = "twostream"

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        cursor = session.cursor or {}
        for stream, times in integration.metadata["streams"].items():
            for at in times:
                if at > cursor.get(stream, ""):
                    session.dispatch(StreamEvent(stream=stream, at=at), checkpoint_value={stream: at},
                                     external_id=f"{stream}-{at}")

    def reduce_checkpoints(self, checkpoints: list[Any]) -> Any:
        merged: dict[str, str] = {}
        for cp in checkpoints:
            for stream, at in (cp or {}).items():
                if at > merged.get(stream, ""):
                    merged[stream] = at
        return merged or None


STREAM_SEEN: list[str] = []


def record_stream(event: StreamEvent) -> None:
    if f"{event.stream}-{event.at}" in POISON:
        raise ValueError("poisoned stream item")
    STREAM_SEEN.append(f"{event.stream}-{event.at}")


def make_defs(database_url: str, settings: dict[str, Any] | None = None, async_listener: bool = False) -> Definitions:
    base = dict(item_backoff=[0.0], item_tries=3, inline_wait_max=5.0, database_url=database_url)
    base.update(settings or {})
    listeners: list[Any] = [(SyntheticItem, record), (StreamEvent, record_stream),
                            (SyncCompleted, on_completed), (SyncItemFailed, on_failed)]
    if async_listener:
        listeners.insert(0, (SyntheticItem, async_record))
    return build_definitions(
        providers=[SyntheticProvider(), TwoStreamProvider()],
        listeners=listeners,
        settings=SyncSettings(**base),
        sensors=False,
    )
