"""The item table's indexes (migration 0022_item_indexes_postgres): on PostgreSQL two fewer, and the
per-integration status index on open items only, so the succeeded rows of a big sync feed three
btrees instead of six; the queries that read open items still go through an index. SQLite keeps its
indexes (its planner matches partial indexes only word for word)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from integrations_dagster import Store
from integrations_dagster.status import ItemStatus
from integrations_dagster.store import utcnow


def _indexes(store: Store) -> set[str]:
    return {ix["name"] for ix in inspect(store.engine).get_indexes("sync_items")}


def test_postgresql_has_three_secondary_item_indexes(pg_store: Store):
    assert _indexes(pg_store) == {"ix_sync_items_run_chunk", "ix_sync_items_completed_external", "ix_sync_items_open"}


def test_sqlite_keeps_its_item_indexes(tmp_path: Any):
    store = Store.for_url(f"sqlite:///{tmp_path}/i.sqlite")
    store.migrate()
    assert _indexes(store) == {"ix_sync_items_run_chunk", "ix_sync_items_run_status", "ix_sync_items_integration_status",
                               "ix_sync_items_status_finished", "ix_sync_items_completed_external"}


def _plan(store: Store, sql: str, **params: Any) -> str:
    with store.engine.connect() as conn:
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}"), params))


def test_open_items_are_found_by_index_among_many_succeeded_ones(pg_store: Store):
    integ = pg_store.create_integration(provider_key="synthetic", name="i")
    with pg_store.begin() as conn:
        run_id = conn.execute(text("INSERT INTO sync_runs (integration_id, status, started_at) "
                                   "VALUES (:i, 'success', now()) RETURNING id"), {"i": integ.id}).scalar()
        now = utcnow()
        rows = [(run_id, integ.id, 0, ItemStatus.SUCCESS.value if i % 1000 else ItemStatus.FAILED.value, 1, 0,
                 f"e{i}", "1", "x:Y", "{}", now) for i in range(20000)]
        pg_store.insert_item_rows(conn, rows)
        conn.execute(text("ANALYZE sync_items"))
    failed = _plan(pg_store, "SELECT id FROM sync_items WHERE integration_id = :i AND status = 'failed'", i=integ.id)
    assert "ix_sync_items_open" in failed, failed
    counts = _plan(pg_store, "SELECT integration_id, count(*) FROM sync_items WHERE status IN "
                             "('pending', 'processing', 'failed', 'superseded') GROUP BY integration_id")
    assert "ix_sync_items_open" in counts, counts
    latest = _plan(pg_store, "SELECT external_id, max(id) FROM sync_items WHERE integration_id = :i AND "
                             "external_id = ANY(:e) AND status = 'success' GROUP BY external_id",
                   i=integ.id, e=["e1", "e2"])
    assert "ix_sync_items_completed_external" in latest, latest
    with pg_store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync_items WHERE integration_id = :i AND status = 'failed'"),
                            {"i": integ.id}).scalar() == 20
