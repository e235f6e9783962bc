"""Pipelined chunks (``engine.pipeline``): on PostgreSQL, with staged listeners only, a chunk whose
items are all written is processed while the enumeration goes on; the chunk steps then find it done,
still retry what failed in it and report what failed; a Python listener or the setting off keeps
the old order; a run discarded meanwhile gets no listener run. Plus the pure decisions: when a
chunk is complete, when pipelining applies, when the superseded-items probe is needed at a claim."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from integrations_dagster import Provider, StagedBatch, Store, SyncItemEvent, SyncSettings, listener
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.engine.pipeline import complete_chunks, pipelining, staged_only
from integrations_dagster.engine.supersede import probe_needed
from integrations_dagster.errors import SyncRunDiscarded


class Piped(SyncItemEvent):
    integration_id: int
    key: str
    value: str


CALLS: list[list[str]] = []  # item keys per staged call
FLAKY: dict[str, int] = {}  # key -> failures still to raise
ON_CALL: list[Any] = []  # hooks run inside the listener (the discard test)


@listener(Piped, staged=True)
def copy_piped(batch: StagedBatch) -> None:
    keys = [e.key for e in batch.events()]
    CALLS.append(keys)
    for hook in list(ON_CALL):
        hook(keys)
    for k in keys:
        if k in FLAKY and FLAKY[k] > 0:
            FLAKY[k] -= 1
            raise RuntimeError(f"flaky {k}")
        if k.startswith("boom"):
            raise RuntimeError(f"always fails: {k}")
    batch.execute("INSERT INTO scratch_piped (k, v) SELECT s.event->>'key', s.event->>'value' FROM {staged} AS s "
                  "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")


@listener(Piped)
def python_listener(event: Piped) -> None:
    CALLS.append([event.key])


class Keys(Provider):
    """Dispatches ``keys`` in order; ``pause(session, i)`` runs before item ``i`` (the tests' probe)."""

    key = "piped"

    def __init__(self, keys: list[str], pause: Any = None) -> None:
        self.keys = keys
        self.pause = pause

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for i, k in enumerate(self.keys):
            if self.pause is not None:
                self.pause(session, i)
            session.dispatch(Piped(integration_id=integration.id, key=k, value=f"v{i}"),
                             checkpoint_value=f"{i:05d}", external_id=k)


def _engine(keys: list[str], listeners: list[Any] | None = None, pause: Any = None, **settings: Any) -> SyncEngine:
    base: dict[str, Any] = {"pipeline_chunks": True, "apply_at_write": False,  # applied at write: nothing to pipeline
                            "chunk_size": 10, "flush_every": 10, "listener_batch_size": 5, "item_tries": 3,
                            "item_backoff": [0.0], "inline_wait_max": 5.0}
    return SyncEngine(providers=[Keys(keys, pause)], listeners=ListenerRegistry.build([copy_piped] if listeners is None else listeners),
                      settings=SyncSettings(**(base | settings)))


@pytest.fixture
def scratch(pg_store: Store):  # type: ignore[no-untyped-def]
    with pg_store.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS scratch_piped"))
        conn.execute(text("CREATE TABLE scratch_piped (k TEXT PRIMARY KEY, v TEXT NOT NULL)"))
    CALLS.clear()
    FLAKY.clear()
    ON_CALL.clear()
    yield pg_store
    with pg_store.begin() as conn:
        conn.execute(text("DROP TABLE scratch_piped"))


def _statuses(store: Store, run_id: int) -> dict[str, str]:
    return {it["external_id"]: it["status"] for it in store.items_for_run(run_id)}


def _wait_for(predicate: Any, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _start(engine: SyncEngine, store: Store) -> tuple[int, int]:
    integ = store.create_integration(provider_key="piped", name="p")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    assert start.run_id is not None
    return integ.id, start.run_id


# --- pure decisions --------------------------------------------------------------------------------
def test_complete_chunks_counts_only_full_chunks_until_the_enumeration_has_returned():
    assert complete_chunks(0, 10, finished=False, dispatched=11) == 0
    assert complete_chunks(9, 10, finished=False, dispatched=11) == 0
    assert complete_chunks(10, 10, finished=False, dispatched=11) == 1
    assert complete_chunks(35, 10, finished=False, dispatched=36) == 3
    assert complete_chunks(35, 10, finished=True, dispatched=35) == 4
    assert complete_chunks(40, 10, finished=True, dispatched=40) == 4
    # A run of one chunk never: nothing would overlap (a small sync stays with its chunk step).
    assert complete_chunks(10, 10, finished=False, dispatched=10) == 0
    assert complete_chunks(7, 10, finished=True, dispatched=7) == 0
    assert complete_chunks(10, 10, finished=True, dispatched=10) == 0


def test_pipelining_needs_the_setting_and_postgresql_and_staged_listeners_only():
    assert pipelining(enabled=True, postgres=True)
    assert not pipelining(enabled=False, postgres=True)
    assert not pipelining(enabled=True, postgres=False)
    assert staged_only([[True], [True, True]])
    assert not staged_only([[True], [True, False]])
    assert not staged_only([[True], []])  # no listener here: maybe another process's definitions have one
    assert staged_only([])


@pytest.mark.parametrize(
    "reopening, enumerating, later_run, later_success, needed",
    [
        (False, False, False, False, False),  # a fresh chunk of the newest run: nothing can supersede it
        (False, False, True, False, True),  # a later run may hold newer versions
        (False, False, False, True, True),  # a later chunk (or this one) of this run already succeeded
        (True, False, False, False, True),  # re-execution reopens failed items of any age
        (False, True, True, True, False),  # pipelined: single flight, chunks in order
        (True, True, False, False, True),
    ],
)
def test_probe_needed_only_when_a_later_version_can_have_succeeded(reopening, enumerating, later_run,
                                                                   later_success, needed):
    assert probe_needed(reopening=reopening, enumerating=enumerating, later_run=later_run,
                        later_success=later_success) is needed


# --- PostgreSQL ------------------------------------------------------------------------------------
def test_chunks_are_processed_while_the_enumeration_runs(scratch):
    """With chunks of 10 and writes of 10, the provider waits (before item 35) until chunk 0 has
    succeeded: only the pipeline can have run it, the run is still enumerating. Then every chunk
    step finds its chunk finished, and the run settles with the cursor at the maximum."""
    store = scratch
    seen: dict[str, Any] = {}

    def pause(session: Any, i: int) -> None:
        if i == 35:
            seen["chunk0_done"] = _wait_for(lambda: list(_statuses(store, session.run_id).values())[:10]
                                            == ["success"] * 10)
            seen["status"] = store.get_run(session.run_id)["status"]

    keys = [f"k{i:03d}" for i in range(42)]
    engine = _engine(keys, pause=pause)
    integ_id, run_id = _start(engine, store)
    result = engine.enumerate(store, store.get_integration(integ_id), run_id, log=logging.getLogger("t"))
    assert seen == {"chunk0_done": True, "status": "enumerating"}
    assert result.chunks == 5
    # The pipeline took part, so it also ran the rest (the last, partial chunk once the enumeration returned).
    assert set(_statuses(store, run_id).values()) == {"success"}
    for chunk in range(result.chunks):
        res = engine.process_chunk(store, run_id, chunk)
        assert (res.succeeded, res.failed, res.waiting) == (0, 0, 0)
    settled = engine.reconcile(store, run_id)
    assert settled.status == "success" and settled.succeeded == 42
    assert store.get_integration(integ_id).cursor == "00041"
    assert sorted(k for call in CALLS for k in call) == keys  # each item once
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scratch_piped")).scalar() == 42


def test_a_failure_in_a_pipelined_chunk_is_retried_and_reported_by_its_chunk_step(scratch):
    """k003 fails once in the pipelined pass (it waits, pending, with one attempt) and succeeds on
    its chunk step's retry; boom7 fails for good in the pipelined pass (item_tries=1): its chunk
    step reports it, so the Dagster step fails and re-execution from failure can reopen it."""
    store = scratch
    keys = [f"k{i:03d}" for i in range(7)] + ["boom7"] + [f"k{i:03d}" for i in range(8, 25)]
    FLAKY["k003"] = 2  # the batch call and its isolating single call
    engine = _engine(keys, item_tries=2)
    integ_id, run_id = _start(engine, store)
    result = engine.enumerate(store, store.get_integration(integ_id), run_id)
    by_key = {it["external_id"]: it for it in store.items_for_run(run_id)}
    assert by_key["k003"]["status"] == "pending" and by_key["k003"]["attempts"] == 1
    assert by_key["boom7"]["status"] == "pending" and by_key["boom7"]["attempts"] == 1
    assert by_key["k012"]["status"] == "success"  # chunks 1 and 2 went through the pipeline
    first = engine.process_chunk(store, run_id, 0)
    assert first.succeeded == 1  # k003, on its second attempt
    assert first.failed == 1 and first.failed_items[0][1] == "boom7"
    assert [engine.process_chunk(store, run_id, c).succeeded for c in range(1, result.chunks)] == [0, 0]
    by_key = {it["external_id"]: it for it in store.items_for_run(run_id)}
    assert by_key["k003"]["status"] == "success" and by_key["k003"]["attempts"] == 2
    assert by_key["boom7"]["status"] == "failed"
    again = engine.process_chunk(store, run_id, 0)  # a later attempt of the step still reports it
    assert again.failed == 1 and again.failed_items[0][1] == "boom7"
    settled = engine.reconcile(store, run_id)
    assert settled.status == "partial" and settled.failed == 1
    assert store.get_integration(integ_id).cursor == "00006"  # held before boom7


def test_with_the_setting_off_chunks_wait_for_their_steps(scratch):
    store = scratch
    keys = [f"k{i:03d}" for i in range(25)]
    engine = _engine(keys, pipeline_chunks=False)
    integ_id, run_id = _start(engine, store)
    result = engine.enumerate(store, store.get_integration(integ_id), run_id)
    assert set(_statuses(store, run_id).values()) == {"pending"} and CALLS == []
    assert [engine.process_chunk(store, run_id, c).succeeded for c in range(result.chunks)] == [10, 10, 5]
    assert engine.reconcile(store, run_id).status == "success"


def test_a_python_listener_keeps_the_chunk_steps(scratch):
    store = scratch
    keys = [f"k{i:03d}" for i in range(25)]
    engine = _engine(keys, listeners=[copy_piped, python_listener])
    integ_id, run_id = _start(engine, store)
    result = engine.enumerate(store, store.get_integration(integ_id), run_id)
    assert set(_statuses(store, run_id).values()) == {"pending"} and CALLS == []
    assert [engine.process_chunk(store, run_id, c).succeeded for c in range(result.chunks)] == [10, 10, 5]


@pytest.mark.parametrize("n", [7, 10])
def test_a_small_sync_is_left_to_its_chunk_steps(scratch, n):
    """A run of one chunk (7 or 10 items, chunks of 10) is never pipelined."""
    store = scratch
    engine = _engine([f"k{i}" for i in range(n)], flush_every=1000)
    integ_id, run_id = _start(engine, store)
    result = engine.enumerate(store, store.get_integration(integ_id), run_id)
    assert set(_statuses(store, run_id).values()) == {"pending"}
    assert sum(engine.process_chunk(store, run_id, c).succeeded for c in range(result.chunks)) == n


def test_an_event_type_without_listeners_is_not_pipelined(scratch):
    """The engine that enumerates may not be the one that runs the chunks (another process)."""
    store = scratch
    engine = _engine([f"k{i:03d}" for i in range(25)], listeners=[])
    integ_id, run_id = _start(engine, store)
    engine.enumerate(store, store.get_integration(integ_id), run_id)
    assert set(_statuses(store, run_id).values()) == {"pending"}


def test_a_run_discarded_while_a_chunk_is_pipelined_gets_no_further_listener_run(scratch, pg_url):
    """Another process discards the run (presumed dead) while the pipeline is inside chunk 0's first
    batch: that batch commits first (the discard waits for its lock on the run row), no batch after
    it runs (the enumeration waits until the pipeline has let go of chunk 0 before it writes on and
    notices), the enumeration fails, and the run keeps no items."""
    store = scratch
    from integrations_dagster.store import runs as run_sql
    from integrations_dagster.store import utcnow

    seen: dict[str, bool] = {}

    def chunk0_let_go(run_id: int) -> bool:
        with store.engine.connect() as conn:
            return not conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :run AND objid = 0 "
                "AND objsubid = 2"), {"run": run_id}).scalar()

    def pause(session: Any, i: int) -> None:
        if i == 20:
            seen["pipeline_done"] = _wait_for(lambda: bool(CALLS) and chunk0_let_go(session.run_id), 10)

    keys = [f"k{i:03d}" for i in range(30)]
    engine = _engine(keys, pause=pause)
    integ_id, run_id = _start(engine, store)
    other = Store.for_url(pg_url)

    def discard() -> None:
        with other.begin() as conn:
            run_sql.discard_enumeration(conn, run_id, "presumed dead (test)", utcnow())

    def on_first_call(keys_: list[str]) -> None:
        ON_CALL.clear()
        thread = threading.Thread(target=discard)
        thread.start()

        def discard_waits() -> bool:  # the discard's row lock (FOR UPDATE) queues behind this transaction's
            with store.engine.connect() as conn:
                return bool(conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND (query LIKE 'UPDATE sync_runs%' OR query LIKE '%FROM sync_runs%FOR UPDATE%')")).scalar())
        seen["discard_waited"] = _wait_for(discard_waits, 5)

    ON_CALL.append(on_first_call)
    with pytest.raises(SyncRunDiscarded):
        engine.enumerate(store, store.get_integration(integ_id), run_id, log=logging.getLogger("t"))
    assert seen == {"discard_waited": True, "pipeline_done": True}
    assert CALLS == [["k000", "k001", "k002", "k003", "k004"]]  # the batch in flight; nothing after it
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "presumed dead" in run["error"]
    assert store.items_for_run(run_id) == []
    assert store.get_integration(integ_id).cursor is None
