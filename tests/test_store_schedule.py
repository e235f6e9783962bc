"""``store.schedule``: the sensors' reads and claim, as typed records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from integrations_dagster import Store
from integrations_dagster.engine.health import disable_values
from integrations_dagster.store import runs as run_sql
from integrations_dagster.store.schedule import DueRow, InFlightRun, claim_due, in_flight_for, read_sync_tick

T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)


def _run(store: Store, integration_id: int, status: str, *, dagster_run_id: str | None = None) -> int:
    with store.begin() as conn:
        return run_sql.insert_run(conn, integration_id=integration_id, status=status, dagster_run_id=dagster_run_id,
                                  started_at=T0 - timedelta(minutes=1))


def test_a_tick_reads_typed_due_rows_in_order_after_the_cursor(store: Store) -> None:
    a, b, c = (store.create_integration(provider_key="p", name=f"i{k}", sync_interval_minutes=5, now=T0)
               for k in range(3))
    store.create_integration(provider_key="other", name="x", sync_interval_minutes=5, now=T0)
    late = store.create_integration(provider_key="p", name="late", sync_interval_minutes=5, now=T0)
    store.update_integration(late.id, next_sync_at=T0 + timedelta(hours=1))
    gone = store.create_integration(provider_key="p", name="gone", sync_interval_minutes=5, now=T0)
    store.update_integration(gone.id, **disable_values("by hand"))

    tick = read_sync_tick(store, "p", now=T0, limit=10)
    assert tick.integration_ids == {a.id, b.id, c.id, late.id, gone.id}
    assert [d.id for d in tick.due] == [a.id, b.id, c.id]  # not the late one, not the disabled one
    first = tick.due[0]
    assert isinstance(first, DueRow) and first.health == "healthy" and first.sync_interval_minutes == 5
    assert first.next_sync_at == T0 and first.next_sync_at.tzinfo is not None  # UTC on SQLite too
    # a page: at most ``limit``, and the next one continues after ``(next_sync_at, id)``
    page = read_sync_tick(store, "p", now=T0, limit=2)
    assert [d.id for d in page.due] == [a.id, b.id]
    rest = read_sync_tick(store, "p", now=T0, limit=2, after=(page.due[-1].next_sync_at, page.due[-1].id))
    assert [d.id for d in rest.due] == [c.id]


def test_scheduled_only_leaves_out_integrations_without_interval_or_cron(store: Store) -> None:
    own = store.create_integration(provider_key="p", name="own", sync_interval_minutes=5, now=T0)
    cron = store.create_integration(provider_key="p", name="cron", sync_cron="*/5 * * * *", now=T0)
    bare = store.create_integration(provider_key="p", name="bare", now=T0)
    store.update_integration(bare.id, next_sync_at=T0)
    assert [d.id for d in read_sync_tick(store, "p", now=T0, limit=10).due] == [own.id, cron.id, bare.id]
    assert [d.id for d in read_sync_tick(store, "p", now=T0, limit=10, scheduled_only=True).due] == [own.id, cron.id]


def test_in_flight_runs_and_last_sizes_of_the_due(store: Store) -> None:
    a, b = (store.create_integration(provider_key="p", name=f"i{k}", sync_interval_minutes=5, now=T0)
            for k in range(2))
    older = _run(store, a.id, "processing", dagster_run_id="d-1")
    _run(store, a.id, "enumerating")
    _run(store, b.id, "success")
    tick = read_sync_tick(store, "p", now=T0, limit=10)
    assert set(tick.in_flight) == {a.id}
    run = tick.in_flight[a.id]
    assert isinstance(run, InFlightRun) and run.id == older  # the oldest in-flight run
    assert (run.status, run.dagster_run_id) == ("processing", "d-1")
    assert run.started_at == T0 - timedelta(minutes=1) and run.started_at.tzinfo is not None
    assert tick.last_sizes == {}  # only asked for when batching
    assert in_flight_for(store, [a.id, b.id]) == tick.in_flight
    assert in_flight_for(store, []) == {}


def test_claim_moves_only_what_is_still_due(store: Store) -> None:
    a, b = (store.create_integration(provider_key="p", name=f"i{k}", sync_interval_minutes=5, now=T0)
            for k in range(2))
    fresh = T0 + timedelta(minutes=30)
    store.update_integration(b.id, next_sync_at=fresh)  # a reconcile set a fresh time meanwhile
    claim = T0 + timedelta(minutes=5)
    claim_due(store, [(a.id, claim), (b.id, claim)], now=T0)
    claim_due(store, [], now=T0)  # nothing to claim: no statement
    assert store.get_integration(a.id).next_sync_at == claim
    assert store.get_integration(b.id).next_sync_at == fresh
