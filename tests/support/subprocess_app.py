"""The definitions the subprocess tests share (dead-run test, kill -9 suite): the synthetic provider
with one delivering listener, one try per item, chunks of 10, one event per listener call, no sensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integrations_dagster import SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider


def synthetic_defs(deliver: Callable[[SyntheticItem], None], staged: Any = None):  # type: ignore[no-untyped-def]
    """``staged``: a staged listener to register instead of ``deliver`` (pipelined chunks on PostgreSQL)."""
    return build_definitions(
        providers=[SyntheticProvider()],
        listeners=[staged] if staged is not None else [(SyntheticItem, deliver)],
        settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=1, chunk_size=10,
                              listener_batch_size=1),
        sensors=False,
    )
