"""The sync engine's guarantees, through the real Dagster job, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus

from integrations_dagster import DefinitionsRef, Store, execute_sync, reexecute_from_failure
from providers.synthetic import checkpoint_for
from tests.support import app
from tests.support import open_instance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_app():  # type: ignore[no-untyped-def]
    app.reset()
    app.STREAM_SEEN.clear()
    yield
    app.reset()


def ref(db_url: str, **settings) -> DefinitionsRef:  # type: ignore[no-untyped-def]
    return DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "settings": settings})


def make(store: Store, items: int, **meta):  # type: ignore[no-untyped-def]
    return store.create_integration(provider_key="synthetic", name="s", metadata={"items": items, **meta})


def failure_messages(instance, run_id: str) -> str:  # type: ignore[no-untyped-def]
    out = []
    for e in instance.all_logs(run_id):
        data = e.dagster_event.event_specific_data if e.dagster_event else None
        err = getattr(data, "error", None)
        if err is not None:
            out.append(err.message)
    return "\n".join(out)


def latest_run(store: Store, integration_id: int) -> dict:
    return store.runs_for_integration(integration_id, limit=1)[0]


def test_first_sync_processes_every_item_and_sets_cursor_to_max(store, db_url, dagster_instance):
    integ = make(store, 25)
    run = execute_sync(ref(db_url, chunk_size=10), "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert sorted(app.SEEN) == sorted(f"item-{i}" for i in range(25))
    sr = latest_run(store, integ.id)
    assert (sr["status"], sr["items_total"], sr["success_count"], sr["chunks"]) == ("success", 25, 25, 3)
    assert store.get_integration(integ.id).cursor == checkpoint_for(24)
    assert len(app.COMPLETED) == 1 and app.COMPLETED[0].cursor_after == checkpoint_for(24)
    assert run.tags["integrations/provider"] == "synthetic" and run.tags["integrations/integration_id"] == str(integ.id)
    # every item row is tracked with its checkpoint, external id and attempts
    items = store.items_for_run(sr["id"])
    assert {i["status"] for i in items} == {"success"} and all(i["attempts"] == 1 for i in items)
    assert items[3]["external_id"] == "item-3" and items[3]["checkpoint"] == checkpoint_for(3)


def test_incremental_second_sync_only_sees_new_items(store, db_url, dagster_instance):
    integ = make(store, 10)
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    app.SEEN.clear()
    store.update_integration(integ.id, metadata={"items": 13})
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    assert app.SEEN == ["item-10", "item-11", "item-12"]
    assert store.get_integration(integ.id).cursor == checkpoint_for(12)


def test_reexecution_from_failure_after_listener_fix_moves_cursor_to_max(store, db_url, dagster_instance):
    integ = make(store, 30)
    app.POISON.add("item-12")
    r = ref(db_url, chunk_size=10)
    run = execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE  # red in the UI, re-executable
    sr = latest_run(store, integ.id)
    assert (sr["status"], sr["success_count"], sr["failed_count"]) == ("partial", 29, 1)
    assert store.get_integration(integ.id).cursor == checkpoint_for(11)  # low-water mark
    assert [f.external_id for f in app.FAILED] == ["item-12"]
    assert app.CALLS["item-12"] == 3  # item_tries
    failed = store.failed_items(integration_id=integ.id)
    assert [f["external_id"] for f in failed] == ["item-12"] and "poisoned" in failed[0]["last_error"]

    app.POISON.clear()  # the listener is fixed between runs
    calls_before = dict(app.CALLS)
    child = reexecute_from_failure(r, run.run_id, instance=dagster_instance)
    assert child.status == DagsterRunStatus.SUCCESS
    assert child.parent_run_id == run.run_id
    # only the failed chunk ran again, and in it only the unfinished item
    changed = {k for k, v in app.CALLS.items() if v != calls_before.get(k)}
    assert changed == {"item-12"}
    sr = latest_run(store, integ.id)
    assert (sr["status"], sr["success_count"], sr["failed_count"]) == ("success", 30, 0)
    assert store.get_integration(integ.id).cursor == checkpoint_for(29)
    step_keys = {
        e.step_key for e in dagster_instance.all_logs(child.run_id) if e.step_key
    }
    assert "synthetic_process_chunk[chunk_1]" in step_keys
    assert "synthetic_process_chunk[chunk_0]" not in step_keys and "synthetic_enumerate" not in step_keys


def test_low_water_mark_holds_back_only_items_after_the_poison(store, db_url, dagster_instance):
    integ = make(store, 20)
    app.POISON.update({"item-7", "item-15"})
    execute_sync(ref(db_url, chunk_size=4), "synthetic", integ.id, instance=dagster_instance)
    assert store.get_integration(integ.id).cursor == checkpoint_for(6)
    sr = latest_run(store, integ.id)
    assert (sr["status"], sr["failed_count"], sr["cursor_after"]) == ("partial", 2, checkpoint_for(6))


def test_items_sharing_a_checkpoint_with_a_failed_item_stay_behind_it(store, db_url, dagster_instance):
    integ = store.create_integration(
        provider_key="twostream", name="t",
        metadata={"streams": {"a": ["2024-01-01", "2024-01-02"]}},
    )
    # structured cursors never advance past a failure: covered below; here the scalar rule
    from integrations_dagster import SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticProvider

    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    s_integ = make(store, 0)
    start = engine.start_run(store, s_integ.id, dagster_run_id=None)
    from integrations_dagster.store import models as m, utcnow

    rows = [("a", "2024-01-01", "success"), ("b", "2024-01-02", "success"), ("c", "2024-01-02", "failed"),
            ("d", "2024-01-03", "success")]
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=s_integ.id, chunk=0, status=st, attempts=1, deferrals=0,
                 external_id=x, checkpoint=cp, event_type="x:y", payload={}, created_at=utcnow())
            for x, cp, st in rows
        ])
        conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == start.run_id)
                     .values(status="processing", enumerated_at=utcnow()))
    result = engine.reconcile(store, start.run_id)
    # b shares 2024-01-02 with the failed c, so it stays behind: the cursor is a's checkpoint
    assert (result.status, result.cursor_after) == ("partial", "2024-01-01")
    assert store.get_integration(s_integ.id).cursor == "2024-01-01"
    del integ


def test_strict_rule_keeps_cursor_on_any_failure(store, db_url, dagster_instance):
    integ = make(store, 10)
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    store.update_integration(integ.id, metadata={"items": 20})
    app.POISON.add("item-18")
    execute_sync(ref(db_url, cursor_rule="strict"), "synthetic", integ.id, instance=dagster_instance)
    assert store.get_integration(integ.id).cursor == checkpoint_for(9)


def test_cursor_is_monotonic(store, db_url, dagster_instance):
    from integrations_dagster import SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticProvider

    integ = make(store, 5)
    store.update_integration(integ.id, cursor=checkpoint_for(50))
    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    from integrations_dagster.store import models as m, utcnow

    with store.begin() as conn:
        store.insert_items(conn, [dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status="success",
                                       attempts=1, deferrals=0, external_id="late", checkpoint=checkpoint_for(3),
                                       event_type="x:y", payload={}, created_at=utcnow())])
        conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == start.run_id)
                     .values(status="processing", enumerated_at=utcnow()))
    assert engine.reconcile(store, start.run_id).cursor_after == checkpoint_for(50)
    assert store.get_integration(integ.id).cursor == checkpoint_for(50)


def test_async_listener_fails_item_at_once_without_retries(store, db_url, dagster_instance):
    integ = make(store, 3)
    r = DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "async_listener": True})
    run = execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    items = store.items_for_run(latest_run(store, integ.id)["id"])
    assert {i["status"] for i in items} == {"failed"}
    assert all(i["attempts"] == 1 for i in items)
    assert all("SyncListenerMustNotBeQueuedError" in i["last_error"] for i in items)
    assert app.SEEN == []  # the synchronous listener after it never ran: the item failed first
    assert store.get_integration(integ.id).cursor is None
    assert latest_run(store, integ.id)["status"] == "failed"  # nothing succeeded


def test_rate_limited_is_deferred_not_counted_as_a_try(store, db_url, dagster_instance):
    integ = make(store, 2)
    app.RATE_LIMITED["item-1"] = 6  # more deferrals than item_tries (3)
    run = execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    item = [i for i in store.items_for_run(latest_run(store, integ.id)["id"]) if i["external_id"] == "item-1"][0]
    assert (item["status"], item["attempts"], item["deferrals"]) == ("success", 1, 6)


def test_genuine_failures_are_retried_then_succeed(store, db_url, dagster_instance):
    integ = make(store, 2)
    app.FLAKY["item-0"] = 2
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    item = store.items_for_run(latest_run(store, integ.id)["id"])[0]
    assert (item["status"], item["attempts"]) == ("success", 3)


def test_long_waits_hand_the_step_back_to_dagster(store, db_url, dagster_instance):
    integ = make(store, 1)
    app.FLAKY["item-0"] = 1
    run = execute_sync(ref(db_url, item_backoff=[0.6], inline_wait_max=0.1), "synthetic", integ.id,
                       instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    types = [e.dagster_event_type.value for e in dagster_instance.all_logs(run.run_id) if e.dagster_event_type]
    assert "STEP_UP_FOR_RETRY" in types


def test_retry_window_fails_item_even_with_tries_left(store, db_url, dagster_instance):
    integ = make(store, 1)
    app.FLAKY["item-0"] = 2
    execute_sync(ref(db_url, item_tries=5, item_backoff=[5.0], item_retry_window=1.0), "synthetic", integ.id,
                 instance=dagster_instance)
    item = store.items_for_run(latest_run(store, integ.id)["id"])[0]
    assert item["status"] == "failed" and "retry window" in item["last_error"] and item["attempts"] == 1


def test_enumeration_that_raises_changes_nothing(store, db_url, dagster_instance):
    integ = make(store, 10)
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    store.update_integration(integ.id, metadata={"items": 30, "fail_enumeration_after": 5})
    app.SEEN.clear()
    run = execute_sync(ref(db_url, flush_every=2), "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = latest_run(store, integ.id)
    assert sr["status"] == "failed" and "enumeration failed" in sr["error"]
    assert store.items_for_run(sr["id"]) == []  # flushed items discarded
    assert app.SEEN == [] and store.get_integration(integ.id).cursor == checkpoint_for(9)
    store.update_integration(integ.id, metadata={"items": 30})
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    assert app.SEEN[0] == "item-10" and store.get_integration(integ.id).cursor == checkpoint_for(29)


def test_killed_enumeration_leaves_cursor_unchanged(store, db_url, tmp_path):
    integ = make(store, 10)
    store.update_integration(integ.id, cursor=checkpoint_for(4))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    Path(env["DAGSTER_HOME"]).mkdir()
    proc = subprocess.run([sys.executable, "-m", "tests.support.killer", db_url, str(integ.id)], env=env,
                          cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    sr = latest_run(store, integ.id)
    assert sr["status"] == "enumerating" and store.get_integration(integ.id).cursor == checkpoint_for(4)
    assert len(store.items_for_run(sr["id"])) == 50  # flushed before the kill, never counted
    # The next run discards the abandoned enumeration and starts from the unchanged cursor.

    with open_instance(env["DAGSTER_HOME"]) as instance:
        # The killed run still looks STARTED to this instance (no run monitoring here): the
        # enumeration is presumed dead once it is older than job_timeout.
        run = execute_sync(ref(db_url, job_timeout=0.01), "synthetic", integ.id, instance=instance)
    assert run.status == DagsterRunStatus.SUCCESS
    runs = store.runs_for_integration(integ.id)
    assert runs[1]["status"] == "failed" and "abandoned" in runs[1]["error"]
    assert store.items_for_run(runs[1]["id"]) == []
    assert app.SEEN == [f"item-{i}" for i in range(5, 10)]
    assert store.get_integration(integ.id).cursor == checkpoint_for(9)


@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_chunk_sizes(store, db_url, dagster_instance, chunk_size):
    integ = make(store, 7)
    run = execute_sync(ref(db_url, chunk_size=chunk_size), "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    sr = latest_run(store, integ.id)
    assert sr["chunks"] == (7 if chunk_size == 1 else 1) and sr["success_count"] == 7
    assert sorted(app.SEEN) == sorted(f"item-{i}" for i in range(7))


def test_structured_cursor_with_own_reducer(store, db_url, dagster_instance):
    integ = store.create_integration(
        provider_key="twostream", name="t",
        metadata={"streams": {"a": ["2024-01-01", "2024-01-03"], "b": ["2024-02-01"]}},
    )
    execute_sync(ref(db_url), "twostream", integ.id, instance=dagster_instance)
    assert store.get_integration(integ.id).cursor == {"a": "2024-01-03", "b": "2024-02-01"}
    # a failure keeps a structured cursor where it was
    store.update_integration(integ.id, metadata={"streams": {"a": ["2024-01-05"], "b": ["2024-02-02"]}})
    app.POISON.add("b-2024-02-02")
    run = execute_sync(ref(db_url), "twostream", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    assert store.get_integration(integ.id).cursor == {"a": "2024-01-03", "b": "2024-02-01"}
    app.POISON.clear()
    reexecute_from_failure(ref(db_url), run.run_id, instance=dagster_instance)
    assert store.get_integration(integ.id).cursor == {"a": "2024-01-05", "b": "2024-02-02"}


def test_each_reconciled_run_is_on_the_asset_timeline(store, db_url, dagster_instance):
    integ = make(store, 4)
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    records = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(["integrations", "synthetic"]), asset_partitions=[str(integ.id)]),
        limit=10,
    ).records
    assert len(records) == 1
    meta = records[0].asset_materialization.metadata
    assert meta["status"].value == "success" and meta["total"].value == 4
    assert meta["succeeded"].value == 4 and meta["failed"].value == 0 and meta["cursor_after"].value == '"00000003"'
    assert "duration_seconds" in meta and "cursor_before" in meta


def test_reconcile_is_idempotent(store, db_url, dagster_instance):
    from dagster import Definitions  # noqa: F401

    integ = make(store, 5)
    app.POISON.add("item-3")
    r = ref(db_url)
    execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    from integrations_dagster.orchestration.code_location import engine_of

    engine = engine_of(r.load())
    run_id = latest_run(store, integ.id)["id"]
    first = engine.reconcile(store, run_id)
    second = engine.reconcile(store, run_id)
    assert (first.status, first.cursor_after, first.failed) == (second.status, second.cursor_after, 1)
    assert not first.changed and not second.changed
    assert len(app.FAILED) == 1  # events fired once


def test_unknown_integration_id_fails_clearly(store, db_url, dagster_instance):
    run = execute_sync(ref(db_url), "synthetic", 4242, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    assert "integration 4242 not found" in failure_messages(dagster_instance, run.run_id)


def test_integration_of_another_provider_is_refused(store, db_url, dagster_instance):
    integ = store.create_integration(provider_key="twostream", name="t", metadata={"streams": {}})
    run = execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    assert "belongs to provider 'twostream'" in failure_messages(dagster_instance, run.run_id)


def test_multiprocess_executor_runs_chunks_in_subprocesses(store, db_url, dagster_instance):
    integ = make(store, 6)
    run = execute_sync(ref(db_url, chunk_size=3, executor="multiprocess", max_concurrent_steps=2), "synthetic",
                       integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert latest_run(store, integ.id)["success_count"] == 6
    assert store.get_integration(integ.id).cursor == checkpoint_for(5)


def test_processing_run_of_a_dead_dagster_run_is_settled_by_the_next_start(store, db_url):
    from integrations_dagster import SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticProvider

    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    integ = make(store, 6)
    first = engine.start_run(store, integ.id, dagster_run_id="dead-run")
    engine.enumerate(store, store.get_integration(integ.id), first.run_id)
    # nothing processed; the owning Dagster run is known to have ended
    still_alive = engine.start_run(store, integ.id, dagster_run_id="other", is_run_alive=lambda _rid: True)
    assert still_alive.skipped and "already has sync run" in (still_alive.skipped_reason or "")
    second = engine.start_run(store, integ.id, dagster_run_id="next", is_run_alive=lambda _rid: False)
    assert not second.skipped
    old = store.get_run(first.run_id)
    assert (old["status"], old["failed_count"]) == ("failed", 6)
    assert all("abandoned" in i["last_error"] for i in store.items_for_run(first.run_id))
    assert store.get_integration(integ.id).cursor is None


def test_listener_errors_never_store_a_credential(store, db_url, dagster_instance, monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 2},
                                     credentials={"token": "sekret-token-4242"})
    app.POISON.add("item-1")
    run = execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    [item] = store.failed_items(integration_id=integ.id)
    assert "calling with ***" in item["last_error"] and "sekret-token-4242" not in item["last_error"]
    logs = " ".join(str(e) for e in dagster_instance.all_logs(run.run_id))
    assert "sekret-token-4242" not in logs


def test_enumeration_streams_in_bounded_batches_and_warns_past_the_soft_cap(store, db_url, caplog):
    """Dispatched items are written every flush_every items: the buffer never holds more."""
    from integrations_dagster import Provider, SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticItem

    sizes: list[int] = []

    class Watching(Provider):
        key = "synthetic"

        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            for i in range(95):
                session.dispatch(SyntheticItem(integration_id=integration.id, index=i, external_id=f"e{i}", value="v"),
                                 checkpoint_value=checkpoint_for(i))
                sizes.append(len(session._buffer))

    import logging

    engine = SyncEngine(providers=[Watching()], listeners=ListenerRegistry([]),
                        settings=SyncSettings(flush_every=10, max_items_per_batch=50, chunk_size=40))
    integ = make(store, 0)
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    log = logging.getLogger("test-enumeration")
    with caplog.at_level(logging.WARNING, logger="test-enumeration"):
        result = engine.enumerate(store, store.get_integration(integ.id), start.run_id, log=log)
    assert max(sizes) < 10 and (result.items, result.chunks) == (95, 3)
    assert len(store.items_for_run(start.run_id)) == 95
    assert any("max_items_per_batch=50" in r.message for r in caplog.records)


def test_reconciling_an_old_run_after_a_newer_one_changes_nothing(store, db_url, dagster_instance):
    from integrations_dagster.orchestration.code_location import engine_of

    integ = make(store, 5)
    r = ref(db_url)
    execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    first_run = latest_run(store, integ.id)
    store.update_integration(integ.id, metadata={"items": 9})
    execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    assert store.get_integration(integ.id).cursor == checkpoint_for(8)
    again = engine_of(r.load()).reconcile(store, first_run["id"])
    assert (again.changed, again.status, again.cursor_after) == (False, "success", checkpoint_for(4))
    assert store.get_integration(integ.id).cursor == checkpoint_for(8) and len(app.COMPLETED) == 2


def test_operator_retry_runs_listeners_in_their_context_and_masks_secrets(store, db_url, dagster_instance,
                                                                           monkeypatch):
    from integrations_dagster.orchestration.code_location import engine_of
    from integrations_dagster.operations.actions import retry_item

    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 3},
                                     credentials={"token": "sekret-token-4242"})
    app.POISON.add("item-2")
    r = ref(db_url)
    execute_sync(r, "synthetic", integ.id, instance=dagster_instance)
    [item] = store.failed_items(integration_id=integ.id)
    again = retry_item(store, engine_of(r.load()), item["id"])  # still poisoned: fails inside current_sync()
    assert again.item_status == "failed" and "calling with ***" in (again.last_error or "")
    app.POISON.clear()
    fixed = retry_item(store, engine_of(r.load()), item["id"])
    assert fixed.item_status == "success" and store.get_integration(integ.id).cursor == checkpoint_for(2)
