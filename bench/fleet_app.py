"""The code location of ``bench/fleet.py``: a fleet of small incremental integrations.

Provider ``fleet``: integration metadata ``rate`` (new items per minute) and ``t0`` (epoch seconds);
at time ``t`` the integration's API "has" ``floor((t - t0) / 60 * rate)`` items, item ``i`` with
checkpoint ``i``; a sync dispatches the ones after the cursor (at most ``max_items``). With rate 2.5
and a 2-minute interval a sync finds about 5 new items: a typical incremental sync of one customer
account. The listener is staged SQL (one upsert per batch into ``bench_fleet_items``), as a real
destination in the same database would be. No HTTP: the per-request cost is measured by bench/github.py.

Settings come from the environment (``INTEGRATIONS_DATABASE_URL``, ``INTEGRATIONS_BATCH_SIZE``, ...).
"""

from __future__ import annotations

import time

from sqlalchemy import text

from integrations_dagster import Integration, Provider, StagedBatch, SyncItemEvent, SyncSession, build_definitions, listener

TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_fleet_items (integration_id integer NOT NULL, external_id varchar(100) "
    "NOT NULL, value varchar(200) NOT NULL, PRIMARY KEY (integration_id, external_id))"
)


class FleetItem(SyncItemEvent):
    integration_id: int
    index: int
    external_id: str
    value: str


class FleetProvider(Provider):
    key = "fleet"
    default_sync_interval = 2

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        meta = integration.metadata
        available = int((time.time() - float(meta["t0"])) / 60.0 * float(meta.get("rate", 2.5)))
        start = 0 if session.cursor is None else int(session.cursor) + 1
        for i in range(start, min(available, start + int(meta.get("max_items", 1000)))):
            ext = f"it-{i}"
            session.dispatch(FleetItem(integration_id=integration.id, index=i, external_id=ext, value=f"v{i}"),
                             checkpoint_value=f"{i:010d}", external_id=ext)


@listener(FleetItem, staged=True)
def store_fleet_items(batch: StagedBatch) -> None:
    if batch.dialect == "postgresql":
        batch.execute(
            "INSERT INTO bench_fleet_items (integration_id, external_id, value) "
            "SELECT (s.event->>'integration_id')::int, s.event->>'external_id', s.event->>'value' FROM {staged} AS s "
            "ON CONFLICT (integration_id, external_id) DO UPDATE SET value = EXCLUDED.value"
        )
    else:
        batch.execute(
            "INSERT INTO bench_fleet_items (integration_id, external_id, value) "
            "SELECT json_extract(s.event, '$.integration_id'), json_extract(s.event, '$.external_id'), "
            "json_extract(s.event, '$.value') FROM {staged} AS s WHERE true "
            "ON CONFLICT (integration_id, external_id) DO UPDATE SET value = excluded.value"
        )


def create_table(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text(TABLE_DDL))


defs = build_definitions(providers=[FleetProvider()], listeners=[store_fleet_items])


def batch_job():  # type: ignore[no-untyped-def]
    """``fleet_sync_batch`` for ``dagster.reconstructable`` (bench/fleet_profile.py)."""
    return defs.resolve_job_def("fleet_sync_batch")
