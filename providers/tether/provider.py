"""The bundled Tether provider (seed 002): push the outbox, then pull snapshots, over ``session.http``.

Push: ``POST /push {"mutations": [...]}`` answers ``applied``, ``rejected`` (reason, details) and
``conflicts`` (the server's state). Pull: ``POST /pull {"cursor": N|null}`` answers ``snapshots``,
``new_sync_cursor`` and ``has_more`` (``SyncCursorPaginator``); each snapshot is checkpointed with its
page's ``new_sync_cursor``, so the low-water cursor resumes at the first page with an unfinished one.
A conflict's server state and a pulled snapshot are the same event (``TetherSnapshot``) with the same
external id (``entity:key``), applied by the same listener (``providers.tether.local``).

Metadata: ``base_url`` (the Tether server). Credentials: ``token`` (optional bearer).
"""

from __future__ import annotations

from typing import Any

from integrations_dagster import (
    Applied,
    Conflict,
    Integration,
    Mutation,
    Provider,
    PushOutcome,
    Rejected,
    SyncItemEvent,
    SyncSession,
)
from integrations_dagster.http import SyncCursorPaginator


class TetherSnapshot(SyncItemEvent):
    """The server's authoritative state of one record, to apply locally."""

    integration_id: int
    entity: str
    key: str
    record: dict[str, Any]
    #: "pull" (a pulled snapshot) or "conflict" (the server's state answered to a conflicting push).
    source: str = "pull"


def external_id(entity: str, key: Any) -> str:
    return f"{entity}:{key}"


class TetherProvider(Provider):
    key = "tether"
    default_sync_interval = 5

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        cursor = session.cursor
        if cursor is not None and not isinstance(cursor, int):
            raise ValueError(f"a Tether cursor is an integer (microseconds), got {cursor!r}")
        for page in session.http.pull_pages("/pull", paginator=SyncCursorPaginator(cursor)):
            for snap in page.snapshots:
                entity, key = str(snap["entity"]), str(snap["key"])
                session.dispatch(
                    TetherSnapshot(integration_id=integration.id, entity=entity, key=key, record=snap),
                    checkpoint_value=page.new_sync_cursor, external_id=external_id(entity, key),
                )

    def push(self, integration: Integration, batch: list[Mutation], session: SyncSession) -> list[PushOutcome]:
        body = {"mutations": [
            {"mutation_id": m.mutation_id, "entity": m.entity, "key": m.key, "operation": m.operation,
             "payload": m.payload}
            for m in batch
        ]}
        answer = session.http.send("POST", "/push", json=body).json()
        out: list[PushOutcome] = [Applied(mid) for mid in answer.get("applied", [])]
        out += [Rejected(r["mutation_id"], r["reason"], r.get("details")) for r in answer.get("rejected", [])]
        out += [Conflict(c["mutation_id"], c["server_state"]) for c in answer.get("conflicts", [])]
        return out

    def conflict_event(self, integration: Integration, mutation: Mutation, server_state: Any) -> TetherSnapshot:
        return TetherSnapshot(integration_id=integration.id, entity=mutation.entity, key=mutation.key,
                              record=dict(server_state or {}), source="conflict")

    def conflict_external_id(self, integration: Integration, mutation: Mutation) -> str:
        return external_id(mutation.entity, mutation.key)
