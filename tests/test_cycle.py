"""Issue 13: Tether's push -> pull cycle through the real Dagster job, on SQLite and PostgreSQL,
against the fake Tether server (providers/tether/fake_server.py) over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus
from sqlalchemy import delete

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.engine.push import run_sync_result
from integrations_dagster.store.outbox import Outbox
from providers.tether import local
from providers.tether.fake_server import TetherState, serve


@pytest.fixture
def tether() -> Iterator[tuple[TetherState, str]]:
    state = TetherState()
    srv = serve(state)
    yield state, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tstore(store: Store) -> Store:
    local.ensure_tables(store)
    with store.begin() as conn:  # the app's table is not emptied by the framework's fixtures
        conn.execute(delete(local.tether_records))
    return store


def ref(db_url: str, **settings: Any) -> DefinitionsRef:
    return DefinitionsRef("tests.support.tether_app", "make_defs", {"database_url": db_url, "settings": settings})


def make(store: Store, url: str) -> Any:
    return store.create_integration(provider_key="tether", name="t", metadata={"base_url": url})


def latest(store: Store, integration_id: int) -> dict[str, Any]:
    return store.runs_for_integration(integration_id, limit=1)[0]


def result(store: Store, run: dict[str, Any]) -> Any:
    return run_sync_result(run, Outbox(store).run_rejections(run["id"]))


def test_cycle_pushes_then_pulls_with_rejection_and_conflict(tstore, db_url, dagster_instance, tether) -> None:
    state, url = tether
    store = tstore
    state.put("task", "3", {"title": "server's title"})  # version 1 on the server
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": "buy milk"}, operation="create")
    local.edit(store, integ.id, "task", "2", {"title": ""}, operation="create")  # rejected: validation
    local.edit(store, integ.id, "task", "3", {"title": "mine"}, base_version=0)  # conflict
    run = execute_sync(ref(db_url, push_batch_size=2), "tether", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert run.tags.get("integrations/direction") is None  # default: the full cycle
    sr = latest(store, integ.id)
    assert sr["direction"] == "sync"
    res = result(store, sr)
    assert (res.pushed, res.conflicts, res.failed, res.skipped) == (1, 1, 1, False)
    assert [r.key for r in res.by_reason("validation_failed")] == ["2"]
    assert res.validation_errors() == [{"title": ["required"]}]
    rows = local.read(store, integ.id)
    # the conflict was resolved by the server's state, applied as a tracked item
    assert rows[("task", "3")]["data"]["title"] == "server's title" and rows[("task", "3")]["version"] == 1
    # pulled snapshots: task 1 (applied by the push) and task 3, with the server's versions
    assert rows[("task", "1")]["source"] == "pull" and rows[("task", "1")]["version"] == 1
    items = store.items_for_run(sr["id"])
    assert {i["external_id"] for i in items} >= {"task:1", "task:3"}
    assert all(i["status"] in ("success", "superseded") for i in items)
    assert res.pulled == sr["success_count"] and res.pull_errors == 0
    assert store.get_integration(integ.id).cursor == state.clock
    counts = Outbox(store).counts(integ.id)
    assert (counts["synced"], counts["failed"], counts["conflict"], counts["pending"]) == (1, 1, 1, 0)
    # the timeline records the push counts
    mats = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(["integrations", "tether"]), asset_partitions=[str(integ.id)]), limit=5
    ).records
    meta = mats[0].asset_materialization.metadata
    assert meta["pushed"].value == 1 and meta["push_conflicts"].value == 1 and meta["push_rejected"].value == 1
    assert meta["direction"].value == "sync"


def test_push_only_and_pull_only_runs(tstore, db_url, dagster_instance, tether) -> None:
    state, url = tether
    store = tstore
    integ = make(store, url)
    state.put("task", "9", {"title": "from the server"})
    local.edit(store, integ.id, "task", "1", {"title": "a"}, operation="create")
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="push")
    sr = latest(store, integ.id)
    assert sr["direction"] == "push" and result(store, sr).pushed == 1
    assert state.records[("task", "1")]["title"] == "a"
    assert ("task", "9") not in local.read(store, integ.id)  # nothing pulled
    assert store.get_integration(integ.id).cursor is None
    local.edit(store, integ.id, "task", "2", {"title": "b"}, operation="create")
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="pull")
    sr = latest(store, integ.id)
    assert sr["direction"] == "pull" and sr["push_summary"] is None
    assert Outbox(store).counts(integ.id)["pending"] == 1  # not pushed by a pull-only run
    assert local.read(store, integ.id)[("task", "9")]["data"]["title"] == "from the server"
    assert store.get_integration(integ.id).cursor == state.clock


def test_conflict_state_is_a_tracked_item_failed_then_retried(tstore, db_url, dagster_instance, tether) -> None:
    """A conflict's server state that cannot be applied fails like any item: retried, failed, listed,
    and an operator's retry applies it."""
    from integrations_dagster.orchestration.code_location import engine_of
    from integrations_dagster.operations import actions as ops
    from tests.support import tether_app

    state, url = tether
    store = tstore
    state.put("task", "3", {"title": "server"})
    integ = make(store, url)
    local.edit(store, integ.id, "task", "3", {"title": "mine"}, base_version=0)
    tether_app.REFUSE.add("task:3")
    try:
        run = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="push")
    finally:
        tether_app.REFUSE.clear()
    assert run.status == DagsterRunStatus.FAILURE
    sr = latest(store, integ.id)
    assert sr["status"] == "failed" and result(store, sr).conflicts == 1
    failed = store.failed_items(integration_id=integ.id)
    assert [(f["external_id"], f["attempts"]) for f in failed] == [("task:3", 2)]
    assert local.read(store, integ.id)[("task", "3")]["source"] == "local"
    # not delivered twice: the next run does not dispatch the same conflict again
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="push")
    assert latest(store, integ.id)["items_total"] == 0
    ops.retry_item(store, engine_of(tether_app.make_defs(db_url)), failed[0]["id"])
    row = local.read(store, integ.id)[("task", "3")]
    assert (row["data"]["title"], row["version"], row["source"]) == ("server", 1, "conflict")


def test_pull_failure_after_push_keeps_push_outcomes_and_delivers_conflict_next_run(
    tstore, db_url, dagster_instance, tether
) -> None:
    state, url = tether
    store = tstore
    state.put("task", "3", {"title": "server"})
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": "ok"}, operation="create")
    local.edit(store, integ.id, "task", "3", {"title": "mine"}, base_version=0)
    state.fail_path["/pull"] = 10  # every attempt of the pull answers 503
    run = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = latest(store, integ.id)
    assert sr["status"] == "failed" and sr["items_total"] == 0 and "enumeration failed" in sr["error"]
    assert result(store, sr).pushed == 1 and result(store, sr).conflicts == 1  # kept on the run
    assert store.get_integration(integ.id).cursor is None
    box = Outbox(store)
    assert box.counts(integ.id)["synced"] == 1 and len(box.undelivered_conflicts(integ.id)) == 1
    state.fail_path.clear()
    run = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert box.undelivered_conflicts(integ.id) == []
    assert local.read(store, integ.id)[("task", "3")]["data"]["title"] == "server"
    assert state.applied_count == 1  # the synced mutation was not pushed again


def test_push_transport_error_fails_the_run_and_loses_nothing(tstore, db_url, dagster_instance, tether) -> None:
    state, url = tether
    store = tstore
    integ = make(store, url)
    for k in range(3):
        local.edit(store, integ.id, "task", str(k), {"title": f"t{k}"}, operation="create")
    state.fail_path["/push"] = 10
    run = execute_sync(ref(db_url, push_batch_size=2), "tether", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    assert Outbox(store).counts(integ.id)["pending"] == 3 and store.get_integration(integ.id).cursor is None
    state.fail_path.clear()
    execute_sync(ref(db_url, push_batch_size=2), "tether", integ.id, instance=dagster_instance)
    assert Outbox(store).counts(integ.id)["synced"] == 3 and state.applied_count == 3


def test_pull_pages_and_low_water_cursor(tstore, db_url, dagster_instance, tether) -> None:
    """has_more paging; a snapshot that fails holds the cursor at the page before it."""
    from tests.support import tether_app

    state, url = tether
    store = tstore
    state.page_size = 2
    for k in range(5):
        state.put("task", str(k), {"title": f"s{k}"})  # clocks 1..5: pages end at 2, 4, 5
    integ = make(store, url)
    tether_app.REFUSE.add("task:2")  # on page 2
    try:
        execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="pull")
    finally:
        tether_app.REFUSE.clear()
    sr = latest(store, integ.id)
    assert (sr["items_total"], sr["success_count"], sr["failed_count"]) == (5, 4, 1)
    assert store.get_integration(integ.id).cursor == 2  # the end of page 1: page 2 comes again
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="pull")
    assert latest(store, integ.id)["items_total"] == 3  # pages 2 and 3 again
    assert store.get_integration(integ.id).cursor == 5
    assert len(local.read(store, integ.id)) == 5


def test_a_push_while_a_cycle_is_in_flight_is_skipped(tstore, db_url, dagster_instance, tether) -> None:
    from integrations_dagster.orchestration.code_location import engine_of
    from integrations_dagster.engine.owner import current_owner
    from tests.support import tether_app

    state, url = tether
    store = tstore
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": "a"}, operation="create")
    engine = engine_of(tether_app.make_defs(db_url))
    held = engine.start_run(store, integ.id, dagster_run_id=None, owner=current_owner(), direction="sync")
    assert held.run_id is not None
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="push")
    sr = latest(store, integ.id)
    assert sr["status"] == "skipped" and sr["direction"] == "push" and result(store, sr).skipped
    assert Outbox(store).counts(integ.id)["pending"] == 1 and state.push_requests == 0


def test_mutation_operator_jobs_from_the_launchpad(tstore, db_url, dagster_instance, tether) -> None:
    """The Launchpad jobs retry and skip failed/conflicting mutations, like the failed-item jobs."""
    from tests.support import tether_app

    state, url = tether
    store = tstore
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": ""}, operation="create")
    local.edit(store, integ.id, "task", "2", {"title": "", "flaky": True}, operation="create")
    execute_sync(ref(db_url, max_retry_attempts=1), "tether", integ.id, instance=dagster_instance, direction="push")
    box = Outbox(store)
    assert box.counts(integ.id)["failed"] == 2
    first, second = box.list(integ.id)
    defs = tether_app.make_defs(db_url)
    for name in ("integrations_retry_mutations", "integrations_skip_mutation"):
        (node,) = defs.resolve_job_def(name).graph.node_defs
        assert all(f.description for f in node.config_schema.config_type.fields.values())
    out = defs.resolve_job_def("integrations_skip_mutation").execute_in_process(
        run_config={"ops": {"skip_mutation": {"config": {"mutation_id": first["id"], "reason": "typo"}}}},
        instance=dagster_instance)
    assert out.success and box.get(first["id"])["skip_reason"] == "typo"
    out = defs.resolve_job_def("integrations_retry_mutations").execute_in_process(
        run_config={"ops": {"retry_mutations": {"config": {"integration_id": integ.id}}}}, instance=dagster_instance)
    assert out.success and box.counts(integ.id)["pending"] == 1
    bad = defs.resolve_job_def("integrations_retry_mutations").execute_in_process(
        run_config={"ops": {"retry_mutations": {"config": {"mutation_ids": [first["id"]]}}}},
        instance=dagster_instance, raise_on_error=False)
    assert not bad.success  # skipped, not failed: a clear failure, nothing changed
    assert box.get(second["id"])["status"] == "pending"


def test_bad_direction_tag_fails_clearly_and_pushes_nothing(tstore, db_url, dagster_instance, tether) -> None:
    state, url = tether
    store = tstore
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": "a"}, operation="create")
    run = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="sideways")
    assert run.status == DagsterRunStatus.FAILURE
    text = " ".join(str(getattr(e.dagster_event.event_specific_data, "error", "")) for e in
                    dagster_instance.all_logs(run.run_id) if e.dagster_event)
    assert "direction must be one of sync, push, pull; got 'sideways'" in text
    assert Outbox(store).counts(integ.id)["pending"] == 1 and state.push_requests == 0
    assert store.runs_for_integration(integ.id) == []  # refused before any sync run was started


def test_a_provider_written_to_the_issues_push_signature_pushes(tstore, db_url, dagster_instance, tether) -> None:
    """Issue 13 names the hook ``push(integration, batch)``: a provider written so pushes (the engine
    passes the session only to a push that takes it) and reaches the run's client via current_sync()."""
    from integrations_dagster.operations import actions as ops
    from tests.support import tether_app

    state, url = tether
    store = tstore
    integ = make(store, url)
    local.edit(store, integ.id, "task", "1", {"title": "a"}, operation="create")
    local.edit(store, integ.id, "task", "2", {"title": ""}, operation="create")
    tether_app.PUSH_CLIENTS.clear()
    two_arg = DefinitionsRef("tests.support.tether_app", "make_defs",
                             {"database_url": db_url, "settings": {}, "two_arg_push": True})
    run = execute_sync(two_arg, "tether", integ.id, instance=dagster_instance, direction="push")
    assert run.status == DagsterRunStatus.SUCCESS
    res = result(store, latest(store, integ.id))
    assert (res.pushed, res.failed, [r.key for r in res.by_reason("validation_failed")]) == (1, 1, ["2"])
    assert state.records[("task", "1")]["title"] == "a"
    assert len(tether_app.PUSH_CLIENTS) == 1
    # the run's own client: its request is in the run's request log
    (entry,) = ops.timeline(store, integ.id, limit=1)
    assert [q["url"].rsplit("/", 1)[-1] for q in entry["request_log"]] == ["push"]


def test_push_takes_session_reads_the_signature() -> None:
    from integrations_dagster.engine.push import push_takes_session

    class P:
        def two(self, integration, batch): ...
        def three(self, integration, batch, session): ...
        def kw(self, integration, batch, *, session=None): ...
        def var(self, *args): ...
        def kwargs(self, integration, batch, **extra): ...

    p = P()
    assert [push_takes_session(f) for f in (p.two, p.three, p.kw, p.var, p.kwargs)] == [
        None, "positional", "keyword", "positional", "keyword"]


@pytest.mark.parametrize("fix", ["reexecute", "skip"])
def test_a_failed_conflict_item_holds_its_runs_cursor_only_and_is_retried_or_skipped(
    tstore, db_url, dagster_instance, tether, fix
) -> None:
    """The pull-cursor rule for a conflict's server state that cannot be applied (docs/PUSH.md, "A
    failed conflict and the pull cursor"): it has no place in the pull order (checkpoint None), so,
    like any failed item without one, it holds the cursor of the run that delivered it; later runs
    do not deliver it again and are not held by it (a pull cannot repair it); it stays a failed item
    until re-executed from failure / retried or skipped, which settles its run."""
    from integrations_dagster import reexecute_from_failure
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.orchestration.code_location import engine_of
    from tests.support import tether_app

    state, url = tether
    store = tstore
    integ = make(store, url)
    state.put("task", "3", {"title": "v1"})
    state.put("task", "3", {"title": "v2"})  # clock 2, version 2
    execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance, direction="pull")
    assert store.get_integration(integ.id).cursor == 2
    local.edit(store, integ.id, "task", "3", {"title": "offline edit"}, base_version=1)  # stale: a conflict
    state.put("task", "7", {"title": "new on the server"})  # clock 3: the next pull's only snapshot
    tether_app.REFUSE.add("task:3@conflict")
    try:
        first = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance)
        assert first.status == DagsterRunStatus.FAILURE
        sr1 = latest(store, integ.id)
        assert (sr1["status"], sr1["success_count"], sr1["failed_count"]) == ("partial", 1, 1)
        assert store.get_integration(integ.id).cursor == 2  # held by the failed conflict item
        (failed,) = store.failed_items(integration_id=integ.id)
        assert failed["external_id"] == "task:3" and failed["run_id"] == sr1["id"]
        # the next cycle: the conflict is not delivered again and does not hold this run's cursor
        second = execute_sync(ref(db_url), "tether", integ.id, instance=dagster_instance)
        assert second.status == DagsterRunStatus.SUCCESS
        sr2 = latest(store, integ.id)
        assert (sr2["items_total"], sr2["status"]) == (1, "success")
        assert store.get_integration(integ.id).cursor == 3
        assert [f["id"] for f in store.failed_items(integration_id=integ.id)] == [failed["id"]]  # still listed
        assert local.read(store, integ.id)[("task", "3")]["data"]["title"] == "offline edit"
    finally:
        tether_app.REFUSE.clear()
    if fix == "reexecute":
        child = reexecute_from_failure(ref(db_url), first.run_id, instance=dagster_instance)
        assert child.status == DagsterRunStatus.SUCCESS
        assert store.get_run(sr1["id"])["status"] == "success"
        row = local.read(store, integ.id)[("task", "3")]
        assert (row["data"]["title"], row["version"], row["source"]) == ("v2", 2, "conflict")
    else:
        res = ops.skip_item(store, engine_of(tether_app.make_defs(db_url)), failed["id"], reason="keep mine")
        assert res.run_status == "success"
        assert local.read(store, integ.id)[("task", "3")]["data"]["title"] == "offline edit"
    assert store.failed_items(integration_id=integ.id) == []
    assert store.get_integration(integ.id).cursor == 3
    assert Outbox(store).counts(integ.id)["conflict"] == 1  # the mutation stays a conflict: skip-mutation ends it
