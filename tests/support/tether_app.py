"""Definitions with the bundled Tether provider for the push/pull cycle tests (issue 13)."""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import Applied, Conflict, Integration, Mutation, Rejected, SyncSettings, build_definitions, current_sync
from integrations_dagster.orchestration.code_location import engine_of
from providers.tether import TetherProvider, TetherSnapshot, apply_tether_snapshot

HTTP_OPTIONS: dict[str, Any] = {"sleep": lambda _s: None, "max_attempts": 2}


#: "entity:key" whose snapshots the app refuses to apply, or "entity:key@source" (``pull`` or
#: ``conflict``) for one source only (failure injection; the test empties it to "fix" it).
REFUSE: set[str] = set()


def refuse_injected(event: TetherSnapshot) -> None:
    if f"{event.entity}:{event.key}" in REFUSE or f"{event.entity}:{event.key}@{event.source}" in REFUSE:
        raise ValueError(f"cannot apply {event.entity}:{event.key} ({event.source}): injected failure")


class TwoArgTetherProvider(TetherProvider):
    """The bundled provider's push written to issue 13's signature, ``push(integration, batch)``: no
    session argument; the run's HTTP client is ``current_sync().http``."""

    def push(self, integration: Integration, batch: list[Mutation]) -> list[Any]:  # type: ignore[override]
        http = current_sync().http
        PUSH_CLIENTS.append(http)
        body = {"mutations": [{"mutation_id": m.mutation_id, "entity": m.entity, "key": m.key,
                               "operation": m.operation, "payload": m.payload} for m in batch]}
        answer = http.send("POST", "/push", json=body).json()
        return ([Applied(mid) for mid in answer["applied"]]
                + [Rejected(r["mutation_id"], r["reason"], r.get("details")) for r in answer["rejected"]]
                + [Conflict(c["mutation_id"], c["server_state"]) for c in answer["conflicts"]])


#: The clients TwoArgTetherProvider.push was given (a test checks it is the run's own).
PUSH_CLIENTS: list[Any] = []


def make_defs(database_url: str, settings: dict[str, Any] | None = None, sensors: bool = False,
              two_arg_push: bool = False) -> Definitions:
    base = dict(item_backoff=[0.0], item_tries=2, inline_wait_max=5.0, database_url=database_url)
    base.update(settings or {})
    provider = TwoArgTetherProvider() if two_arg_push else TetherProvider()
    defs = build_definitions(providers=[provider], listeners=[(TetherSnapshot, refuse_injected), apply_tether_snapshot],
                             settings=SyncSettings(**base), sensors=sensors)
    engine_of(defs).http_options = dict(HTTP_OPTIONS)
    return defs
