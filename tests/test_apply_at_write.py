"""Applied at write (``engine.apply``): on PostgreSQL, when every listener of a dispatched event type is
staged, the enumeration's writer runs those listeners in the transaction that records each batch and
records the items succeeded; a batch whose staged call fails is recorded pending and its chunk step
retries it (culprit isolated, the cursor held below it); a run discarded meanwhile gets no rows; a
Python listener on the same type keeps today's path; a run whose chunks are all applied runs no chunk
step. Plus the pure decision."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from dagster import DagsterEventType
from sqlalchemy import text

from integrations_dagster import (
    DefinitionsRef,
    Provider,
    StagedBatch,
    Store,
    SyncItemEvent,
    SyncSettings,
    build_definitions,
    execute_sync,
    listener,
)
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.apply import may_apply
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.errors import SyncRunDiscarded
from integrations_dagster.store import runs as run_sql
from integrations_dagster.store import utcnow


class Applied(SyncItemEvent):
    integration_id: int
    key: str
    value: str


CALLS: list[list[str]] = []  # item keys per staged call
FLAKY: dict[str, int] = {}  # key -> failures still to raise
PHASE: list[str] = []  # "enumerating" while the provider runs, then "after"
BLOCK: list[Any] = []  # hooks run inside the staged listener with the batch's keys


@listener(Applied, staged=True)
def copy_applied(batch: StagedBatch) -> None:
    keys = [e.key for e in batch.events()]
    CALLS.append([f"{PHASE[-1] if PHASE else '?'}:{k}" for k in keys])
    for hook in list(BLOCK):
        hook(keys)
    for k in keys:
        if FLAKY.get(k, 0) > 0:
            FLAKY[k] -= 1
            raise RuntimeError(f"flaky {k}")
        if k.startswith("boom"):
            raise RuntimeError(f"always fails: {k}")
    batch.execute("INSERT INTO scratch_applied (k, v) SELECT s.event->>'key', s.event->>'value' FROM {staged} AS s "
                  "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")


PYTHON_CALLS: list[str] = []


@listener(Applied)
def python_listener(event: Applied) -> None:
    PYTHON_CALLS.append(event.key)


class Keys(Provider):
    """Dispatches ``keys`` in order, checkpoint = the index; ``pause(session, i)`` runs before item ``i``."""

    key = "applied"

    def __init__(self, keys: list[str] | None = None, pause: Any = None) -> None:
        self.keys = keys or []
        self.pause = pause

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        PHASE.append("enumerating")
        keys = self.keys or [f"k{i}" for i in range(int(integration.metadata.get("items", 0)))]
        for i, k in enumerate(keys):
            if self.pause is not None:
                self.pause(session, i)
            session.dispatch(Applied(integration_id=integration.id, key=k, value=f"v{i}"),
                             checkpoint_value=f"{i:05d}", external_id=k)
        PHASE.append("after")


def _engine(keys: list[str], listeners: list[Any] | None = None, pause: Any = None, **settings: Any) -> SyncEngine:
    base: dict[str, Any] = {"chunk_size": 10, "flush_every": 5, "listener_batch_size": 5, "item_tries": 3,
                            "item_backoff": [0.0], "inline_wait_max": 5.0}
    return SyncEngine(providers=[Keys(keys, pause)],
                      listeners=ListenerRegistry.build([copy_applied] if listeners is None else listeners),
                      settings=SyncSettings(**(base | settings)))


@pytest.fixture
def scratch(pg_store: Store):  # type: ignore[no-untyped-def]
    with pg_store.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS scratch_applied"))
        conn.execute(text("CREATE TABLE scratch_applied (k TEXT PRIMARY KEY, v TEXT NOT NULL)"))
    CALLS.clear()
    FLAKY.clear()
    PHASE.clear()
    PYTHON_CALLS.clear()
    yield pg_store
    with pg_store.begin() as conn:
        conn.execute(text("DROP TABLE scratch_applied"))


def _rows(store: Store) -> dict[str, str]:
    with store.begin() as conn:
        return dict(conn.execute(text("SELECT k, v FROM scratch_applied")).all())  # type: ignore[arg-type]


def _items(store: Store, run_id: int) -> dict[str, dict[str, Any]]:
    return {it["external_id"]: it for it in store.items_for_run(run_id)}


def _start(engine: SyncEngine, store: Store) -> tuple[int, int]:
    integ = store.create_integration(provider_key="applied", name="a")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    assert start.run_id is not None
    return integ.id, start.run_id


# --- the decision (pure) ---------------------------------------------------------------------------
def test_may_apply_only_on_postgresql_fresh_enumerations_with_staged_listeners_only():
    ok = {"enabled": True, "postgres": True, "fresh_enumeration": True, "invalid": False, "staged_flags": [True]}
    assert may_apply(**ok)
    assert may_apply(**(ok | {"staged_flags": [True, True]}))
    assert not may_apply(**(ok | {"enabled": False}))
    assert not may_apply(**(ok | {"postgres": False}))  # SQLite keeps today's path
    assert not may_apply(**(ok | {"fresh_enumeration": False}))  # items run again are the chunk steps'
    assert not may_apply(**(ok | {"invalid": True}))  # an invalid item fails at its chunk step
    assert not may_apply(**(ok | {"staged_flags": [True, False]}))  # a Python (or queued) listener too
    assert not may_apply(**(ok | {"staged_flags": []}))  # no listener here: the chunk steps decide


# --- behaviour (real PostgreSQL) -------------------------------------------------------------------
def test_items_applied_at_write_are_succeeded_with_their_effects_and_need_no_chunk_step(scratch: Store):
    keys = [f"k{i}" for i in range(23)]
    seen: dict[str, Any] = {}

    def pause(session: Any, i: int) -> None:
        if i == 10:  # mid-enumeration: what is recorded is already applied, and succeeded
            session.flush()
            seen["rows"] = set(_rows(scratch))
            seen["statuses"] = {it["status"] for it in scratch.items_for_run(session.run_id)}

    engine = _engine(keys, pause=pause)
    integration_id, run_id = _start(engine, scratch)
    result = engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    assert (result.items, result.chunks, result.pending_chunks, result.chunks_to_run()) == (23, 3, [], [])
    assert seen == {"rows": {f"k{i}" for i in range(10)}, "statuses": {"success"}}
    assert sorted(k.split(":")[1] for call in CALLS for k in call) == sorted(keys)
    items = _items(scratch, run_id)
    assert {it["status"] for it in items.values()} == {"success"}
    assert {it["attempts"] for it in items.values()} == {1}
    assert all(it["finished_at"] is not None for it in items.values())
    assert all(it["payload"] is not None for it in items.values())  # show-item / replay still read it
    # Ids in dispatch order (supersession compares them).
    assert [items[k]["id"] for k in keys] == sorted(items[k]["id"] for k in keys)
    assert _rows(scratch) == {k: f"v{i}" for i, k in enumerate(keys)}
    settled = engine.reconcile(scratch, run_id)
    assert (settled.status, settled.succeeded, settled.failed) == ("success", 23, 0)
    assert scratch.get_integration(integration_id).cursor == "00022"


def test_a_failed_staged_call_records_its_batch_pending_and_the_chunk_step_isolates_the_culprit(scratch: Store):
    keys = [f"k{i}" for i in range(20)]
    keys[12] = "boom12"  # second chunk, third batch (items 10-14)
    FLAKY["k3"] = 1  # first batch fails once: recorded pending, succeeds at its chunk step
    engine = _engine(keys)
    integration_id, run_id = _start(engine, scratch)
    result = engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    assert result.pending_chunks == [0, 1]
    items = _items(scratch, run_id)
    pending = {k for k, it in items.items() if it["status"] == "pending"}
    assert pending == {"k0", "k1", "k2", "k3", "k4", "k10", "k11", "boom12", "k13", "k14"}
    assert {it["status"] for k, it in items.items() if k not in pending} == {"success"}
    assert set(_rows(scratch)) == {k for k in keys if k not in pending}  # the failed batches left no effect
    for chunk in result.chunks_to_run():
        engine.process_chunk(scratch, run_id, chunk)
    items = _items(scratch, run_id)
    assert items["boom12"]["status"] == "failed" and items["boom12"]["attempts"] == 3
    assert {it["status"] for k, it in items.items() if k != "boom12"} == {"success"}
    assert set(_rows(scratch)) == set(keys) - {"boom12"}
    settled = engine.reconcile(scratch, run_id)
    assert (settled.status, settled.succeeded, settled.failed) == ("partial", 19, 1)
    assert scratch.get_integration(integration_id).cursor == "00011"  # held below the culprit (12)


def test_a_run_discarded_while_enumerating_gets_no_rows_and_no_effects(scratch: Store):
    discarded = threading.Event()

    def pause(session: Any, i: int) -> None:
        if i == 12 and not discarded.is_set():
            session.flush()  # the first two batches are recorded (and applied)
            with scratch.begin() as conn:  # another process presumes the run dead
                assert run_sql.discard_enumeration(conn, session.run_id, "presumed dead", utcnow())
            discarded.set()

    engine = _engine([f"k{i}" for i in range(30)], pause=pause)
    integration_id, run_id = _start(engine, scratch)
    with pytest.raises(SyncRunDiscarded):
        engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    assert scratch.items_for_run(run_id) == []
    # Only the batches committed before the discard ran their listener; none after it.
    assert set(_rows(scratch)) == {f"k{i}" for i in range(12)}
    assert scratch.get_run(run_id)["status"] == "failed"
    assert scratch.get_integration(integration_id).cursor is None


def test_a_discard_waits_for_the_batch_in_flight_while_the_request_count_does_not(scratch: Store):
    """The writer holds the run row ``FOR KEY SHARE`` during a batch (its listeners included): the
    request log's count update on that row goes through at once; a discard (``FOR UPDATE``) waits for
    the batch to commit, then removes every row of the run, and no later batch is recorded."""
    from integrations_dagster.store import request_log

    events: dict[str, Any] = {}
    inside = threading.Event()
    release = threading.Event()

    def block(keys: list[str]) -> None:
        if keys and keys[0] == "k5":  # the second batch, inside the writer's transaction
            inside.set()
            assert release.wait(20)

    def pause(session: Any, i: int) -> None:
        if i != 12:
            return
        assert inside.wait(20)
        row = request_log.LoggedRequest(integration_id=session.integration.id, sync_run_id=session.run_id,
                                        method="GET", url="/x", status_code=200, duration_ms=1.0, bytes=1,
                                        attempt=1, error=None, auth_failure=False, created_at=utcnow())

        def count() -> None:
            with scratch.begin() as conn:
                request_log.write_requests(conn, [row], sync_run_id=session.run_id)
            events["counted"] = True

        def discard() -> None:
            with scratch.begin() as conn:
                events["discarded"] = run_sql.discard_enumeration(conn, session.run_id, "presumed dead", utcnow())

        counter = threading.Thread(target=count)
        counter.start()
        counter.join(5)
        events["count_waited"] = counter.is_alive()
        discarder = threading.Thread(target=discard)
        discarder.start()
        discarder.join(0.5)
        events["discard_waited"] = discarder.is_alive()
        release.set()
        discarder.join(20)

    BLOCK.append(block)
    try:
        engine = _engine([f"k{i}" for i in range(30)], pause=pause)
        integration_id, run_id = _start(engine, scratch)
        with pytest.raises(SyncRunDiscarded):
            engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    finally:
        BLOCK.clear()
    assert events == {"counted": True, "count_waited": False, "discard_waited": True, "discarded": True}
    assert scratch.items_for_run(run_id) == []
    assert scratch.get_run(run_id)["request_count"] == 1
    assert set(_rows(scratch)) <= {f"k{i}" for i in range(15)}  # nothing recorded after the discard


def test_a_python_listener_on_the_same_event_type_keeps_todays_path(scratch: Store):
    keys = [f"k{i}" for i in range(12)]
    engine = _engine(keys, listeners=[copy_applied, python_listener])
    integration_id, run_id = _start(engine, scratch)
    result = engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    assert result.chunks_to_run() == [0, 1]
    assert CALLS == [] and PYTHON_CALLS == []
    assert {it["status"] for it in scratch.items_for_run(run_id)} == {"pending"}
    for chunk in result.chunks_to_run():
        engine.process_chunk(scratch, run_id, chunk)
    assert sorted(PYTHON_CALLS) == sorted(keys) and set(_rows(scratch)) == set(keys)
    assert all(c.startswith("after:") for call in CALLS for c in call)  # run by the chunk steps
    assert engine.reconcile(scratch, run_id).status == "success"


def test_the_setting_off_records_every_item_pending(scratch: Store):
    engine = _engine([f"k{i}" for i in range(7)], apply_at_write=False)
    integration_id, run_id = _start(engine, scratch)
    result = engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    assert result.pending_chunks is None and result.chunks_to_run() == [0]
    assert CALLS == [] and {it["status"] for it in scratch.items_for_run(run_id)} == {"pending"}


def test_sqlite_keeps_todays_path(tmp_path: Any):
    sqlite_store = Store.for_url(f"sqlite:///{tmp_path}/s.sqlite")
    sqlite_store.migrate()
    CALLS.clear()
    engine = _engine([f"k{i}" for i in range(7)], listeners=[python_listener])
    integration_id, run_id = _start(engine, sqlite_store)
    result = engine.enumerate(sqlite_store, sqlite_store.get_integration(integration_id), run_id)
    assert result.chunks_to_run() == [0]
    assert {it["status"] for it in sqlite_store.items_for_run(run_id)} == {"pending"}


# --- through the Dagster job -------------------------------------------------------------------------
def make_defs(database_url: str) -> Any:
    return build_definitions(
        providers=[Keys()], listeners=[copy_applied],
        settings=SyncSettings(database_url=database_url, chunk_size=10, flush_every=5, item_backoff=[0.0],
                              item_tries=2, inline_wait_max=5.0),
        sensors=False,
    )


def _steps(instance: Any, run_id: str, event_type: Any) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=event_type)}


def test_a_run_applied_at_write_runs_only_its_enumerate_step(scratch: Store, pg_url: str, dagster_instance: Any):
    ref = DefinitionsRef("tests.test_apply_at_write", "make_defs", {"database_url": pg_url})
    integ = scratch.create_integration(provider_key="applied", name="job", metadata={"items": 25})
    run = execute_sync(ref, "applied", integ.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START) == {"applied_enumerate"}
    [sync_run] = scratch.runs_for_integration(integ.id, limit=1)
    assert (sync_run["status"], sync_run["success_count"], sync_run["items_total"]) == ("success", 25, 25)
    assert scratch.get_integration(integ.id).cursor == "00024"
    assert len(_rows(scratch)) == 25
    mats = dagster_instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    assert mats, "the run is on the timeline"

    # A failing item: only its chunk gets a step; the run ends red, the cursor held below it.
    FLAKY.clear()
    bad = scratch.create_integration(provider_key="applied", name="bad", metadata={"items": 25})
    FLAKY["k17"] = 10**6  # k17 fails for good: its batch (15-19) falls back to its chunk step
    run = execute_sync(ref, "applied", bad.id, instance=dagster_instance)
    assert run.status.value == "FAILURE"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START) == {
        "applied_enumerate", "applied_process_chunk[chunk_1]"}
    [sync_run] = scratch.runs_for_integration(bad.id, limit=1)
    assert (sync_run["status"], sync_run["success_count"], sync_run["failed_count"]) == ("partial", 24, 1)
    assert scratch.get_integration(bad.id).cursor == "00016"


# --- parallel writers (SyncSettings.write_connections) ----------------------------------------------
def _committed_success(store: Store, run_id: int, key: str) -> bool:
    with store.engine.connect() as conn:  # another connection: sees committed rows only
        return conn.execute(text("SELECT count(*) FROM sync_items WHERE run_id = :r AND external_id = :k "
                                 "AND status = 'success'"), {"r": run_id, "k": key}).scalar() == 1


def test_two_write_connections_commit_batches_side_by_side_and_keep_ids_in_dispatch_order(scratch: Store):
    """The first batch's listener waits until the second batch has committed: only a second writer can
    get it there. Ids still follow the dispatch order, and every item is applied once."""
    keys = [f"k{i}" for i in range(20)]
    seen: dict[str, Any] = {}
    run: dict[str, int] = {}

    def block(batch_keys: list[str]) -> None:
        if batch_keys and batch_keys[0] == "k0":
            deadline = threading.Event()
            for _ in range(100):
                if _committed_success(scratch, run["id"], "k5"):
                    seen["second_first"] = True
                    return
                deadline.wait(0.05)
            seen["second_first"] = False

    BLOCK.append(block)
    try:
        engine = _engine(keys, write_connections=2)
        integration_id, run_id = _start(engine, scratch)
        run["id"] = run_id
        result = engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    finally:
        BLOCK.clear()
    assert seen == {"second_first": True}
    assert result.pending_chunks == []
    items = _items(scratch, run_id)
    assert [items[k]["id"] for k in keys] == sorted(items[k]["id"] for k in keys)
    assert {it["status"] for it in items.values()} == {"success"}
    assert sorted(k.split(":")[1] for call in CALLS for k in call) == sorted(keys)
    assert _rows(scratch) == {k: f"v{i}" for i, k in enumerate(keys)}
    assert engine.reconcile(scratch, run_id).status == "success"
    assert scratch.get_integration(integration_id).cursor == "00019"


def test_one_write_connection_writes_batch_after_batch(scratch: Store):
    keys = [f"k{i}" for i in range(10)]
    seen: dict[str, bool] = {}
    run: dict[str, int] = {}

    def block(batch_keys: list[str]) -> None:
        if batch_keys and batch_keys[0] == "k0":
            threading.Event().wait(0.3)
            seen["second_first"] = _committed_success(scratch, run["id"], "k5")

    BLOCK.append(block)
    try:
        engine = _engine(keys, write_connections=1)
        integration_id, run_id = _start(engine, scratch)
        run["id"] = run_id
        engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
    finally:
        BLOCK.clear()
    assert seen == {"second_first": False}
    assert {it["status"] for it in scratch.items_for_run(run_id)} == {"success"}


def test_with_parallel_writers_a_failed_batch_stops_the_batches_behind_it(scratch: Store):
    """A write that fails before taking its ids (the run was discarded) must not leave the writers
    behind it waiting for ever: the enumeration fails at once and nothing of the run stays."""
    discarded = threading.Event()

    def pause(session: Any, i: int) -> None:
        if i == 7 and not discarded.is_set():
            session.flush()
            with scratch.begin() as conn:
                assert run_sql.discard_enumeration(conn, session.run_id, "presumed dead", utcnow())
            discarded.set()

    engine = _engine([f"k{i}" for i in range(60)], pause=pause, write_connections=3)
    integration_id, run_id = _start(engine, scratch)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            engine.enumerate(scratch, scratch.get_integration(integration_id), run_id)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(30), "the enumeration hung behind a failed write"
    assert isinstance(outcome.get("error"), SyncRunDiscarded)
    assert scratch.items_for_run(run_id) == []
    assert scratch.get_integration(integration_id).cursor is None


def test_in_order_lets_writes_step_in_sequence_and_a_failure_releases_the_rest():
    from integrations_dagster.engine.background import InOrder, WriterStopped

    order = InOrder()
    steps: list[int] = []
    threads = [threading.Thread(target=lambda s=s: order.step(s, lambda: steps.append(s))) for s in (2, 1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert steps == [0, 1, 2]

    order = InOrder()
    errors: list[BaseException] = []

    def later() -> None:
        try:
            order.step(1, lambda: steps.append(99))
        except WriterStopped as exc:
            errors.append(exc)

    waiter = threading.Thread(target=later)
    waiter.start()
    order.fail()  # write 0 failed before its step
    waiter.join(5)
    assert not waiter.is_alive() and len(errors) == 1 and 99 not in steps


def test_a_run_applied_at_write_needs_no_analyze_but_one_with_chunk_steps_does(scratch: Store):
    from tests.test_store_statistics import analyze_count

    scratch.ANALYZE_AFTER_ITEMS = 10  # type: ignore[misc]  # this store only: a small run counts as big
    try:
        before = analyze_count(scratch)
        engine = _engine([f"k{i}" for i in range(30)])
        integration_id, run_id = _start(engine, scratch)
        assert engine.enumerate(scratch, scratch.get_integration(integration_id), run_id).pending_chunks == []
        engine.reconcile(scratch, run_id)
        keys = [f"j{i}" for i in range(30)]
        keys[3] = "boom3"  # one batch falls back to pending: its chunk step needs the statistics
        engine = _engine(keys)
        integration_id, run_id = _start(engine, scratch)
        assert engine.enumerate(scratch, scratch.get_integration(integration_id), run_id).pending_chunks == [0]
        deadline = threading.Event()
        for _ in range(100):
            if analyze_count(scratch) > before:
                break
            deadline.wait(0.1)
        deadline.wait(0.5)  # an ANALYZE of the first run would have been started before this one's
        assert analyze_count(scratch) == before + 1
    finally:
        del scratch.ANALYZE_AFTER_ITEMS
