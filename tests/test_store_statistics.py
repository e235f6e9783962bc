"""A big enumeration refreshes PostgreSQL's planner statistics of the item table (Store.refresh_statistics).

Without it, during a first sync of 100,000 GitHub issues the planner still believed the integration had a
few hundred rows and answered each chunk's "latest success per external id" probe (engine.supersede) by
scanning all its rows: about 2-7 s per probe of 500 ids, measured with bench/github.py."""

from __future__ import annotations

import time

from dagster import DagsterRunStatus
from sqlalchemy import text

from integrations_dagster import Store, execute_sync
from tests.test_engine import make, ref


def analyze_count(store: Store) -> int:
    with store.engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(conn.execute(text(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'sync_items'")).scalar() or 0)


def test_a_big_enumeration_refreshes_the_item_tables_statistics(store, db_url, dagster_instance):
    small = make(store, 20)
    before = None if store.is_sqlite else analyze_count(store)
    assert execute_sync(ref(db_url, chunk_size=10), "synthetic", small.id,
                        instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    if store.is_sqlite:  # SQLite plans the probe by index without statistics: nothing to refresh
        assert store.refresh_statistics(10 ** 6) is False
        return
    assert analyze_count(store) == before  # a small sync costs no ANALYZE

    big = make(store, Store.ANALYZE_AFTER_ITEMS)
    run = execute_sync(ref(db_url, chunk_size=5000), "synthetic", big.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    deadline = time.monotonic() + 10
    while analyze_count(store) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert analyze_count(store) == before + 1
    assert store.get_integration(big.id).cursor is not None


def test_the_analyze_runs_beside_the_enumeration_not_in_its_way(store, db_url):
    """``refresh_statistics`` returns at once: the ANALYZE runs on a thread and connection of its own. Held
    up here by a lock that conflicts with it (taken by another session), it waits there, and it lands when
    the lock goes."""
    if store.is_sqlite:
        return
    import threading

    import pytest

    before = analyze_count(store)
    with store.engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE sync_items IN SHARE UPDATE EXCLUSIVE MODE"))  # what ANALYZE takes
        done = threading.Event()
        threading.Thread(target=lambda: (store.refresh_statistics(Store.ANALYZE_AFTER_ITEMS), done.set()),
                         daemon=True).start()
        if not done.wait(10):
            pytest.fail("refresh_statistics waited for the ANALYZE")
        assert analyze_count(store) == before  # it is waiting for the lock
        blocker.rollback()
    deadline = time.monotonic() + 10
    while analyze_count(store) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert analyze_count(store) == before + 1
