"""Definitions with the bundled Tether provider for the push/pull cycle tests (issue 13)."""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions, engine_of
from providers.tether import TetherProvider, TetherSnapshot, apply_tether_snapshot

HTTP_OPTIONS: dict[str, Any] = {"sleep": lambda _s: None, "max_attempts": 2}


#: "entity:key" whose snapshots the app refuses to apply (failure injection; the test empties it to "fix" it).
REFUSE: set[str] = set()


def refuse_injected(event: TetherSnapshot) -> None:
    if f"{event.entity}:{event.key}" in REFUSE:
        raise ValueError(f"cannot apply {event.entity}:{event.key} ({event.source}): injected failure")


def make_defs(database_url: str, settings: dict[str, Any] | None = None, sensors: bool = False) -> Definitions:
    base = dict(item_backoff=[0.0], item_tries=2, inline_wait_max=5.0, database_url=database_url)
    base.update(settings or {})
    defs = build_definitions(providers=[TetherProvider()], listeners=[(TetherSnapshot, refuse_injected), apply_tether_snapshot],
                             settings=SyncSettings(**base), sensors=sensors)
    engine_of(defs).http_options = dict(HTTP_OPTIONS)
    return defs
