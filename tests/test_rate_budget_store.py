"""The shared rate budget and the request log over ``store/rate_budgets.py`` and ``store/request_log.py``,
on SQLite and PostgreSQL, with a controlled clock (no HTTP: the decisions and their SQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from integrations_dagster import RateLimit, Store
from integrations_dagster.authoring.context import DbRateBudget, DbRequestRecorder
from integrations_dagster.http import RequestLogEntry
from integrations_dagster.store import models as m
from integrations_dagster.store import runs as run_sql


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _integration(store: Store) -> int:
    return store.create_integration(provider_key="p", name="budgeted").id


def test_the_window_holds_at_most_limit_grants_and_is_shared(store: Store) -> None:
    iid, clock = _integration(store), Clock()
    budget = DbRateBudget(store, iid, RateLimit(3, 10.0), clock=clock)
    assert [budget.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = budget.acquire()
    assert wait == pytest.approx(10.0 + budget.margin)  # until the oldest grant leaves the window
    # another process on the same integration sees the same spent window
    other = DbRateBudget(store, iid, RateLimit(3, 10.0), clock=clock)
    assert other.acquire() == pytest.approx(wait)
    clock.now += wait + 0.01
    assert other.acquire() == 0.0
    with store.engine.connect() as conn:
        granted = list(conn.execute(select(m.rate_budget_grants.c.granted_at)
                                    .where(m.rate_budget_grants.c.integration_id == iid)).scalars())
    assert len(granted) == 4


def test_retry_after_blocks_and_only_tightens(store: Store) -> None:
    iid, clock = _integration(store), Clock()
    budget = DbRateBudget(store, iid, RateLimit(100, 60.0), clock=clock)
    budget.observe({"Retry-After": "5"})
    assert budget.acquire() == pytest.approx(5.0)
    budget.observe({"Retry-After": "1"})  # a shorter wait never loosens the block
    assert budget.acquire() == pytest.approx(5.0)
    clock.now += 5.0
    assert budget.acquire() == 0.0


def test_a_low_server_quota_caps_the_grants_until_it_resets(store: Store) -> None:
    iid, clock = _integration(store), Clock()
    budget = DbRateBudget(store, iid, RateLimit(100, 60.0), clock=clock)
    assert budget.acquire() == 0.0  # creates the budget's row
    budget.observe({"X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "2000"})  # plenty: not persisted
    row = _budget_row(store, iid)
    assert row.server_remaining is None
    budget.observe({"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "2000"})  # low: persisted
    assert (_budget_row(store, iid).server_remaining, _budget_row(store, iid).server_reset) == (2, 2000.0)
    assert budget.acquire() == 0.0 and budget.acquire() == 0.0
    assert _budget_row(store, iid).server_remaining == 0
    assert budget.acquire() == pytest.approx(1_000.0)  # spent: wait for the server's reset
    budget.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1500"})  # exhausted: blocked until reset
    assert _budget_row(store, iid).blocked_until == 1500.0


def test_the_request_log_is_written_in_batches_and_counted_on_the_run(store: Store) -> None:
    iid = _integration(store)
    with store.begin() as conn:
        run_id = run_sql.insert_run(conn, integration_id=iid, status="processing", started_at=datetime.now(UTC))
    recorder = DbRequestRecorder(store, iid, run_id, batch=2)

    def entry(status: int, *, auth_failure: bool = False) -> RequestLogEntry:
        return RequestLogEntry(method="GET", url="https://api.example/x", status_code=status, duration_ms=1.5,
                               bytes=10, attempt=1, error=None, auth_failure=auth_failure)

    recorder.record(entry(200))
    assert recorder.recorded == 0  # below the batch size: buffered
    recorder.record(entry(200))
    if store.is_sqlite:
        assert recorder.recorded == 2
    recorder.record(entry(401, auth_failure=True))  # an auth failure is written at once (after the batch
    # queued before it) and marks the run
    assert recorder.recorded == 3
    recorder.flush()  # nothing buffered: no write
    run = store.get_run(run_id)
    assert run["request_count"] == 3 and run["auth_failure"] is True
    with store.engine.connect() as conn:
        rows = conn.execute(select(m.requests_log.c.status_code, m.requests_log.c.sync_run_id)
                            .where(m.requests_log.c.integration_id == iid).order_by(m.requests_log.c.id)).all()
    assert [tuple(r) for r in rows] == [(200, run_id), (200, run_id), (401, run_id)]
    recorder.close()


def test_a_full_batch_of_the_request_log_does_not_hold_up_the_fetching_thread(pg_store: Store) -> None:
    """On PostgreSQL a full batch is written on the recorder's own thread: here the run row is locked
    by another transaction, so the write waits, while ``record`` returns at once; ``flush`` waits."""
    import threading
    import time

    store = pg_store
    iid = _integration(store)
    with store.begin() as conn:
        run_id = run_sql.insert_run(conn, integration_id=iid, status="processing", started_at=datetime.now(UTC))
    recorder = DbRequestRecorder(store, iid, run_id, batch=2)
    e = RequestLogEntry(method="GET", url="https://api.example/x", status_code=200, duration_ms=1.0, bytes=1,
                        attempt=1, error=None, auth_failure=False)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.begin() as conn:
            conn.execute(select(m.sync_runs.c.id).where(m.sync_runs.c.id == run_id).with_for_update())
            locked.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    t0 = time.monotonic()
    for _ in range(6):
        recorder.record(e)
    assert time.monotonic() - t0 < 1.0  # three batches handed over, none waited for
    assert recorder.recorded == 0  # still waiting for the lock
    release.set()
    holder.join(10)
    recorder.close()
    assert recorder.recorded == 6 and store.get_run(run_id)["request_count"] == 6


def _budget_row(store: Store, iid: int) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(m.rate_budgets).where(m.rate_budgets.c.integration_id == iid)).one()


def test_a_large_budget_leases_two_percent_per_transaction(store: Store) -> None:
    """GitHub's 5,000 an hour: one budget transaction per 100 requests (the page-fetching thread's
    round trips), and a small budget still one request at a time."""
    iid, clock = _integration(store), Clock()
    budget = DbRateBudget(store, iid, RateLimit.per_hour(5000), clock=clock)
    for _ in range(200):
        assert budget.acquire() == 0.0
    assert budget.lease == 100 and budget._grants == 2
    small = DbRateBudget(store, _integration(store), RateLimit(40, 2.0), clock=clock)
    assert small.lease == 1
