"""Issue 9 point 11 (a-c): checked, then fixed, each with a test that fails on the old behaviour.

a. SQLite: two overlapping steps on one chunk (the claim also selects ``processing`` rows) ran the
   same items at once: a chunk is now held by a lock file's record lock (plus an in-process
   registry), as PostgreSQL holds an advisory lock.
b. PostgreSQL: the advisory lock was silently lost when the server killed the session holding it
   (``pg_terminate_backend``, ``idle_session_timeout``): the step now checks its lock before each
   batch and stops with ``ChunkLockLost``, leaving the rest pending; ``idle_session_timeout`` is
   off for the lock's session.
c. Health counted a run twice when a re-executed run ended partial again: a run now counts once
   (``sync_runs.health_counted``, ``engine.health.counts_toward_health``).

(d and e, ISO timestamps of mixed precision and redacted notification errors, are in
tests/test_bad_data.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from integrations_dagster import Provider, SyncItemEvent, SyncSettings, listener
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.engine.health import counts_toward_health
from integrations_dagster.operations import actions as ops
from integrations_dagster.store.locks import ChunkLockLost, chunk_lock
from tests.conftest import PG_ADMIN_URL


class Item(SyncItemEvent):
    n: int


N: list[int] = [3]
DELIVERED: list[int] = []
BAD: set[int] = set()


@listener(Item)
def deliver(event: Item) -> None:
    if event.n in BAD:
        raise RuntimeError(f"item {event.n} is bad")
    DELIVERED.append(event.n)


class Numbers(Provider):
    key = "numbers"

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for i in range(N[0]):
            session.dispatch(Item(n=i), checkpoint_value=i, external_id=f"n{i}")


@pytest.fixture(autouse=True)
def _clean():  # type: ignore[no-untyped-def]
    DELIVERED.clear()
    BAD.clear()
    N[0] = 3
    yield
    DELIVERED.clear()
    BAD.clear()


def engine_for(listeners: list[Any] | None = None, **settings: Any) -> SyncEngine:
    return SyncEngine(providers=[Numbers()], listeners=ListenerRegistry.build(listeners or [deliver]),
                      settings=SyncSettings(item_backoff=[0], **settings))


def enumerate_run(engine: SyncEngine, store, integration_id: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    s = engine.start_run(store, integration_id, dagster_run_id=None)
    assert not s.skipped, s.skipped_reason
    return s.run_id, engine.enumerate(store, store.get_integration(integration_id), s.run_id).chunks


def statuses(store, run_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [it["status"] for it in store.items_for_run(run_id)]


# --- a. SQLite: two overlapping steps on one chunk -------------------------------------------------
def test_sqlite_two_overlapping_steps_never_run_one_chunk_at_once(tmp_path):
    from integrations_dagster import Store

    store = Store.for_url(f"sqlite:///{tmp_path}/overlap.sqlite")
    first_step_inside = threading.Event()
    release = threading.Event()
    step_a: dict[str, Any] = {}

    @listener(Item)
    def slow(event: Item) -> None:
        if threading.current_thread() is step_a.get("thread") and event.n == 0:
            first_step_inside.set()
            assert release.wait(30)
        DELIVERED.append(event.n)

    engine = engine_for([slow], listener_batch_size=1)
    integ = store.create_integration(provider_key="numbers", name="n")
    run_id, chunks = enumerate_run(engine, store, integ.id)
    assert chunks == 1
    step_a["thread"] = threading.Thread(target=engine.process_chunk, args=(store, run_id, 0))
    step_a["thread"].start()
    try:
        assert first_step_inside.wait(30)
        assert set(statuses(store, run_id)) == {"processing"}
        # A second step on the same chunk (a retried step, a re-execution, another executor):
        # before the fix it claimed the `processing` rows too and delivered them a second time.
        second = engine.process_chunk(store, run_id, 0)
        assert (second.succeeded, second.failed) == (0, 0)
        assert DELIVERED == []
    finally:
        release.set()
        step_a["thread"].join(30)
    assert sorted(DELIVERED) == [0, 1, 2]
    assert engine.reconcile(store, run_id).status == "success"


def test_sqlite_chunk_lock_excludes_another_process_and_is_released_when_it_ends(tmp_path):
    from integrations_dagster import Store

    url = f"sqlite:///{tmp_path}/locks.sqlite"
    store = Store.for_url(url)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from integrations_dagster import Store
            from integrations_dagster.store.locks import chunk_lock
            with chunk_lock(Store.for_url({url!r}), 7, 0) as held:
                print("held" if held else "refused", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(__import__("pathlib").Path.cwd()),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with chunk_lock(store, 7, 0) as claim:
            assert not claim  # held by the other process
        with chunk_lock(store, 7, 1) as claim:
            assert claim  # another chunk of the same run is free
        with chunk_lock(store, 8, 0) as claim:
            assert claim  # the same chunk of another run is free
    finally:
        holder.communicate("", timeout=30)
    open_files = len(os.listdir("/proc/self/fd"))
    with chunk_lock(store, 7, 0) as claim:
        assert claim  # released when the holder ended
        with chunk_lock(store, 7, 0) as again:
            assert not again  # and held against this process's other threads/steps too
    assert len(os.listdir("/proc/self/fd")) == open_files  # the lock file is closed once nothing is held


# --- b. PostgreSQL: the advisory lock's session killed by the server -------------------------------
def test_postgres_step_stops_when_the_session_holding_its_chunk_lock_is_terminated(pg_store):
    store = pg_store
    killed: list[int] = []

    @listener(Item)
    def kill_the_lock_session(event: Item) -> None:
        DELIVERED.append(event.n)
        if not killed:
            with psycopg.connect(store.engine.url.render_as_string(hide_password=False)
                                 .replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
                pids = [r[0] for r in admin.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = 0 "
                    "AND objsubid = 2 AND granted", (run["id"],))]
                assert len(pids) == 1
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
                killed.append(pids[0])

    engine = engine_for([kill_the_lock_session], listener_batch_size=1)
    integ = store.create_integration(provider_key="numbers", name="n")
    run: dict[str, int] = {}
    run["id"], _ = enumerate_run(engine, store, integ.id)
    # before the fix the step went on without its lock (another step could take the chunk meanwhile)
    with pytest.raises(ChunkLockLost, match="advisory lock"):
        engine.process_chunk(store, run["id"], 0)
    assert DELIVERED == [0]
    assert sorted(statuses(store, run["id"])) == ["pending", "pending", "success"]
    engine.process_chunk(store, run["id"], 0)  # the next attempt takes the chunk and finishes it
    assert DELIVERED == [0, 1, 2]
    assert engine.reconcile(store, run["id"]).status == "success"


def test_postgres_chunk_lock_session_is_not_closed_for_being_idle(pg_store):
    with chunk_lock(pg_store, 1, 0) as claim:
        assert claim
        assert claim._conn.execute(text("SHOW idle_session_timeout")).scalar() == "0"
        claim.check()


# --- c. health counted once per run -----------------------------------------------------------------
def test_counts_toward_health_once_per_run():
    assert counts_toward_health(counted=False, status="partial", newer_run=False)
    assert counts_toward_health(counted=False, status="success", newer_run=True)
    assert not counts_toward_health(counted=True, status="partial", newer_run=False)
    assert not counts_toward_health(counted=True, status="failed", newer_run=False)
    assert counts_toward_health(counted=True, status="success", newer_run=False)  # fixed: healthy again
    assert not counts_toward_health(counted=True, status="success", newer_run=True)  # a newer run decides


def test_a_reexecuted_run_that_ends_partial_again_is_counted_once(store):
    engine = engine_for(item_tries=1)
    integ = store.create_integration(provider_key="numbers", name="n")
    BAD.add(1)
    run_id, chunks = enumerate_run(engine, store, integ.id)
    engine.process_chunk(store, run_id, 0)
    assert engine.reconcile(store, run_id).status == "partial"
    assert store.get_integration(integ.id).consecutive_failures == 1
    for _ in range(2):  # re-executed from failure, still failing: partial again, not one more failure
        engine.process_chunk(store, run_id, 0, reopen_failed=True)
        assert engine.reconcile(store, run_id).status == "partial"
        assert store.get_integration(integ.id).consecutive_failures == 1  # before the fix: 2, then 3
    [bad] = ops.list_failed_items(store, integration_id=integ.id)
    assert ops.retry_item(store, engine, bad["id"]).item_status == "failed"
    assert store.get_integration(integ.id).consecutive_failures == 1
    BAD.clear()
    assert ops.retry_item(store, engine, bad["id"]).run_status == "success"
    integration = store.get_integration(integ.id)
    assert (integration.consecutive_failures, integration.health) == (0, "healthy")


def test_fixing_an_old_run_does_not_clear_the_health_a_newer_run_set(store):
    engine = engine_for(item_tries=1)
    integ = store.create_integration(provider_key="numbers", name="n")
    BAD.add(1)
    runs = []
    for _ in range(2):  # two partial runs in a row: two unsuccessful runs
        run_id, _chunks = enumerate_run(engine, store, integ.id)
        engine.process_chunk(store, run_id, 0)
        assert engine.reconcile(store, run_id).status == "partial"
        runs.append(run_id)
    assert store.get_integration(integ.id).consecutive_failures == 2
    BAD.clear()
    [old_bad] = [it for it in ops.list_failed_items(store, integration_id=integ.id) if it["sync_run_id"] == runs[0]]
    assert ops.retry_item(store, engine, old_bad["id"]).run_status == "success"
    # before the fix: the old run's success reset the integration to healthy although the newer run failed
    assert store.get_integration(integ.id).consecutive_failures == 2
