"""Batch runs (issue 11 points 1-2): many small syncs in one ``<key>_sync_batch`` run, one step per
integration, with per-integration cursors, timeline, single flight and re-execution from failure.

The batch job runs for real (``execute_job`` on a persistent instance, in-process executor) on SQLite and
PostgreSQL state stores; the sensor's sharding is tested as the pure function it is
(``engine.fleet.plan_tick``) and through real sensor ticks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, EventRecordsFilter, ReexecutionOptions, execute_job

from integrations_dagster import Store
from integrations_dagster.engine.fleet import DueIntegration, TickPlan, batch_run_key, plan_tick, shard
from integrations_dagster.orchestration.batch import (
    BATCH_IO_KEY,
    batch_job_name,
    batch_members,
    batch_run_config,
    integration_of,
    mapping_key,
    members_of,
    step_groups,
)
from integrations_dagster.orchestration.code_location import engine_of
from integrations_dagster.orchestration.in_process import DefinitionsRef, ensure_partition
from providers.synthetic import checkpoint_for
from tests.support import fleet_app
from tests.support.sched_tools import T0, Clock, tick

STEP = "synthetic_sync_integration"


# --- the sharding decision (pure) ------------------------------------------------------------------
def due(i: int, last: int | None = 5, at: datetime = T0) -> DueIntegration:
    return DueIntegration(id=i, next_sync_at=at, last_items=last)


def test_shards_are_consecutive_and_near_equal():
    assert shard([], 3) == []
    assert shard([1, 2, 3], 3) == [[1, 2, 3]]
    assert shard(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    sizes = [len(s) for s in shard(list(range(201)), 200)]
    assert sizes == [101, 100]
    big = shard(list(range(2000)), 300)
    assert [x for s in big for x in s] == list(range(2000)) and max(map(len, big)) - min(map(len, big)) <= 1
    assert len(big) == 7 and max(map(len, big)) <= 300
    with pytest.raises(ValueError, match="batch_size"):
        shard([1], 0)


def test_first_and_big_syncs_get_their_own_runs_small_ones_are_batched():
    cands = [due(1, None), due(2, 10), due(3, 5000), due(4, 2000), due(5, 0)]
    plan = plan_tick(cands, batch_size=2, big_items=2000, max_own_runs=10)
    assert plan.own_runs == [1, 3]            # first sync (size unknown), bigger than the threshold
    assert plan.batches == [[2, 4], [5]]      # at the threshold counts as small; shards of at most 2
    assert plan.taken == 5


def test_batching_off_or_too_few_small_ones_give_own_runs():
    cands = [due(1), due(2), due(3, None)]
    assert plan_tick(cands, batch_size=0, big_items=100, max_own_runs=10) == TickPlan(own_runs=[1, 2, 3], taken=3)
    lone = plan_tick([due(1), due(2, None)], batch_size=200, big_items=100, max_own_runs=10)
    assert lone == TickPlan(own_runs=[1, 2], taken=2)  # a batch of one is no cheaper than its own run


def test_own_run_cap_stops_the_plan_in_order():
    cands = [due(1), due(2, None), due(3), due(4, None), due(5), due(6)]
    plan = plan_tick(cands, batch_size=10, big_items=100, max_own_runs=1)
    # 4 is a second own run: the cap is reached there, so 4 and everything after it wait
    assert plan == TickPlan(own_runs=[2], batches=[[1, 3]], taken=3)
    with pytest.raises(ValueError):
        plan_tick(cands, batch_size=10, big_items=100, max_own_runs=-1)


def test_batch_run_key_names_the_members_and_their_due_times():
    a = [due(1), due(2)]
    assert batch_run_key(a) == batch_run_key([due(1), due(2)])
    assert batch_run_key(a) != batch_run_key([due(1), due(2, at=T0 + timedelta(minutes=2))])
    assert batch_run_key(a) != batch_run_key([due(1), due(3)])
    assert batch_run_key(a).startswith("batch:1:2:")


def test_mapping_keys_round_trip_and_reject_others():
    assert mapping_key(42) == "i42" and integration_of("i42") == 42
    for bad in ("42", "i", "i4x", None, "chunk_0"):
        with pytest.raises(ValueError, match="mapping key"):
            integration_of(bad)
    assert mapping_key([3, 14, 1]) == "i3_14_1" and members_of("i3_14_1") == [3, 14, 1] and members_of("i7") == [7]
    for bad in ("i3_", "i_3", "i3__4", "3_4"):
        with pytest.raises(ValueError, match="mapping key"):
            members_of(bad)
    with pytest.raises(ValueError, match="names 2 integrations"):
        integration_of("i3_4")
    assert step_groups([5, 6, 5, 7, 8, 9, 10, 11], 3) == [[5, 6, 7], [8, 9], [10, 11]]  # duplicates once, near-equal
    assert step_groups([1, 2], 10) == [[1, 2]]
    assert batch_members("synthetic", batch_run_config("synthetic", [3, 1])) == [3, 1]
    assert batch_members("synthetic", {"ops": {}}) == []


# --- real batch runs ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _reset():  # type: ignore[no-untyped-def]
    fleet_app.BROKEN.clear()
    fleet_app.FLAKY.clear()
    fleet_app._FAILED_ONCE.clear()
    fleet_app.SEEN.clear()
    yield
    fleet_app.BROKEN.clear()
    fleet_app.SEEN.clear()


def ref_for(db_url: str, **settings) -> DefinitionsRef:  # type: ignore[no-untyped-def]
    kwargs: dict = {"database_url": db_url}
    if settings:
        kwargs["settings"] = settings
    return DefinitionsRef("tests.support.fleet_app", "make_defs", kwargs)


def run_batch(ref: DefinitionsRef, instance, ids: list[int], **kw):  # type: ignore[no-untyped-def]
    for iid in ids:
        ensure_partition(instance, "synthetic", iid)
    return execute_job(ref.reconstructable_job(batch_job_name("synthetic")), instance=instance,
                       run_config=batch_run_config("synthetic", ids),
                       tags={"integrations/provider": "synthetic", "integrations/trigger": "schedule"}, **kw)


@pytest.fixture(params=[1, 3], ids=["1-per-step", "3-per-step"])
def per_step(request) -> int:  # type: ignore[no-untyped-def]
    """Integrations per mapped step (``batch_step_size``): one each, and groups sharing a step."""
    return int(request.param)


def step_of(iid: int, ids: list[int], per: int) -> str:
    """The step key of the batch step that syncs ``iid`` when ``ids`` run ``per`` to a step."""
    [group] = [g for g in step_groups(ids, per) if iid in g]
    return f"{STEP}[{mapping_key(group)}]"


def started_steps(result) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START)


def timeline(instance, iid: int) -> list[dict]:  # type: ignore[no-untyped-def]
    recs = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(["integrations", "synthetic"]), asset_partitions=[str(iid)]), limit=50
    ).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in recs]


def test_one_failing_integration_fails_only_its_step_and_reexecution_runs_only_it(db_url, dagster_instance,
                                                                                   per_step):
    ref = ref_for(db_url, batch_step_size=per_step)
    store = Store.for_url(db_url)
    ids = [store.create_integration(provider_key="synthetic", name=f"s{k}", metadata={"items": 5}).id
           for k in range(4)]
    bad = ids[2]
    fleet_app.BROKEN.add(bad)

    first = run_batch(ref, dagster_instance, ids, raise_on_error=False)
    assert not first.success
    assert started_steps(first) == sorted(["synthetic_batch_plan"] + sorted({step_of(i, ids, per_step) for i in ids}))
    failed = sorted(e.step_key for e in first.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert failed == [step_of(bad, ids, per_step)]
    for iid in ids:
        integ = store.get_integration(iid)
        if iid == bad:
            assert integ.cursor is None  # every item failed: the cursor holds
        else:
            assert integ.cursor == checkpoint_for(4)
            assert sorted(e for i, e in fleet_app.SEEN if i == iid) == [f"item-{k}" for k in range(5)]
            [mat] = timeline(dagster_instance, iid)
            assert mat["status"] == "success" and mat["total"] == 5
    [bad_mat] = timeline(dagster_instance, bad)
    assert bad_mat["status"] == "failed" and bad_mat["failed"] == 5
    # the failure names the integration and its items, like the partitioned job's chunk failure
    [failure] = [e for e in first.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert f"integration {bad}" in failure.event_specific_data.error.message

    fleet_app.BROKEN.clear()  # the fix
    fleet_app.SEEN.clear()
    parent = dagster_instance.get_run_by_id(first.run_id)
    again = execute_job(
        ref.reconstructable_job(batch_job_name("synthetic")), instance=dagster_instance, tags=parent.tags,
        reexecution_options=ReexecutionOptions.from_failure(first.run_id, dagster_instance),
    )
    assert again.success
    assert started_steps(again) == [step_of(bad, ids, per_step)]  # only the failed integration's step
    assert sorted(fleet_app.SEEN) == [(bad, f"item-{k}") for k in range(5)]
    assert store.get_integration(bad).cursor == checkpoint_for(4)
    # the same sync run was finished (its failed items reopened), not a new one started
    assert bad_mat["sync_run_id"] == timeline(dagster_instance, bad)[0]["sync_run_id"]
    assert timeline(dagster_instance, bad)[0]["status"] == "success"
    for iid in ids:
        if iid != bad:
            assert len(timeline(dagster_instance, iid)) == 1  # the others were not run again


def test_integrations_retry_path_reexecutes_a_failed_batch_run_keeping_its_shard(db_url, dagster_instance, per_step):
    """``integrations retry ID`` re-executes the failed Dagster run of the integration's failed items from
    failure (``in_process.reexecute_from_failure``); for a batch run that keeps the run's shard config and
    runs only the failed integrations' steps."""
    from integrations_dagster.orchestration.in_process import reexecute_from_failure

    ref = ref_for(db_url, batch_step_size=per_step)
    store = Store.for_url(db_url)
    ids = [store.create_integration(provider_key="synthetic", name=f"r{k}", metadata={"items": 2}).id
           for k in range(3)]
    fleet_app.BROKEN.add(ids[0])
    first = run_batch(ref, dagster_instance, ids, raise_on_error=False)
    assert not first.success
    fleet_app.BROKEN.clear()
    fleet_app.SEEN.clear()
    child = reexecute_from_failure(ref, first.run_id, instance=dagster_instance, log_level="ERROR")
    assert child.status.value == "SUCCESS"
    steps = sorted(r.step_key for r in dagster_instance.get_run_step_stats(child.run_id))
    assert steps == [step_of(ids[0], ids, per_step)]
    assert sorted(fleet_app.SEEN) == [(ids[0], "item-0"), (ids[0], "item-1")]
    assert store.get_integration(ids[0]).cursor == checkpoint_for(1)


def test_a_long_retry_wait_hands_the_step_back_and_its_retry_finishes_the_same_sync_run(db_url, dagster_instance,
                                                                                        per_step):
    """An item retry further away than inline_wait_max: the step raises RetryRequested (the other
    integrations' steps run meanwhile); its next attempt continues the same sync run, not a new one."""
    ref = ref_for(db_url, item_backoff=[1.0], inline_wait_max=0.1, item_tries=3, batch_step_size=per_step)
    store = Store.for_url(db_url)
    flaky, calm = (store.create_integration(provider_key="synthetic", name=n, metadata={"items": 3}).id
                   for n in ("flaky", "calm"))
    fleet_app.FLAKY.add(flaky)
    result = run_batch(ref, dagster_instance, [flaky, calm])
    assert result.success
    restarts = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert [e.step_key for e in restarts] == [step_of(flaky, [flaky, calm], per_step)]
    assert sorted(e for i, e in fleet_app.SEEN if i == flaky) == ["item-0", "item-1", "item-2"]
    [mat] = timeline(dagster_instance, flaky)  # one sync run, settled once
    assert mat["status"] == "success" and mat["total"] == 3
    assert store.get_integration(flaky).cursor == checkpoint_for(2)
    assert len(timeline(dagster_instance, calm)) == 1  # a step's retry does not sync its finished members again


def test_incremental_batch_sync_and_an_integration_with_nothing_new(db_url, dagster_instance):
    ref = ref_for(db_url)
    store = Store.for_url(db_url)
    a, b = (store.create_integration(provider_key="synthetic", name=n, metadata={"items": 3}).id for n in "ab")
    assert run_batch(ref, dagster_instance, [a, b]).success
    store.update_integration(a, metadata={"items": 5})
    fleet_app.SEEN.clear()
    assert run_batch(ref, dagster_instance, [a, b]).success
    assert sorted(fleet_app.SEEN) == [(a, "item-3"), (a, "item-4")]
    assert store.get_integration(a).cursor == checkpoint_for(4)
    assert store.get_integration(b).cursor == checkpoint_for(2)
    assert [m["total"] for m in timeline(dagster_instance, b)] == [0, 3]  # newest first


def test_single_flight_across_batch_and_partitioned_runs(db_url, dagster_instance, per_step):
    """A sync run in flight under a live partitioned run makes that integration's batch step skip; the
    others in the batch sync. And a live batch run keeps the sensor from giving its members own runs."""
    ref = ref_for(db_url, batch_step_size=per_step)
    defs = ref.load()
    engine = engine_of(defs)
    store = Store.for_url(db_url)
    busy, free = (store.create_integration(provider_key="synthetic", name=n, metadata={"items": 2}).id
                  for n in ("busy", "free"))
    ensure_partition(dagster_instance, "synthetic", busy)
    live = dagster_instance.create_run_for_job(defs.resolve_job_def("synthetic_sync"), tags={
        "dagster/partition": str(busy), "integrations/integration_id": str(busy)})  # NOT_STARTED: alive
    held = engine.start_run(store, busy, dagster_run_id=live.run_id)
    result = run_batch(ref, dagster_instance, [busy, free])
    assert result.success
    assert store.get_integration(free).cursor == checkpoint_for(1)
    assert store.get_integration(busy).cursor is None and all(i != busy for i, _ in fleet_app.SEEN)
    skipped = [e for e in result.all_events if e.event_type == DagsterEventType.ASSET_OBSERVATION]
    assert [e.step_key for e in skipped] == [step_of(busy, [busy, free], per_step)]
    assert store.get_run(held.run_id)["status"] == "enumerating"  # the partitioned run's sync untouched


def sensor_defs(db_url: str, clock: Clock, **settings):  # type: ignore[no-untyped-def]
    defs = fleet_app.make_defs(db_url, settings=settings)
    engine_of(defs).clock = clock
    return defs


def synced(store: Store, engine, n: int, items: int = 2) -> list[int]:  # type: ignore[no-untyped-def]
    """``n`` integrations that synced once (``items`` each) and are due at T0."""
    ids = []
    for k in range(n):
        iid = store.create_integration(provider_key="synthetic", name=f"s{k}", metadata={"items": items}, now=T0).id
        start = engine.start_run(store, iid, dagster_run_id=None)
        res = engine.enumerate(store, store.get_integration(iid), start.run_id)
        for c in range(res.chunks):
            engine.process_chunk(store, res.run_id, c)
        engine.reconcile(store, res.run_id)
        store.update_integration(iid, next_sync_at=T0)
        ids.append(iid)
    return ids


def test_sensor_shards_small_due_integrations_into_batch_runs(store, db_url, dagster_instance):
    clock = Clock(T0)
    defs = sensor_defs(db_url, clock, batch_size=3, batch_max_items=10)
    engine = engine_of(defs)
    small = synced(store, engine, 5)
    big = synced(store, engine, 1, items=11)[0]
    new = store.create_integration(provider_key="synthetic", name="new", metadata={"items": 1}, now=T0).id
    t = tick(defs, dagster_instance)
    assert t.own_runs == [big, new]
    assert t.batches == [small[:3], small[3:]]
    for req in t.run_requests:
        if req.partition_key is None:
            assert req.job_name == "synthetic_sync_batch" and req.tags["integrations/trigger"] == "schedule"
            assert "integrations/integration_id" not in req.tags
        else:
            assert req.job_name == "synthetic_sync"
    assert t.log_mentions("7 due, 7 requested, 0 skipped in flight (2 own runs, 5 in 2 batch runs)")
    # every requested integration is claimed, batched or not
    assert all(store.get_integration(i).next_sync_at > T0 for i in small + [big, new])
    assert tick(defs, dagster_instance).requested == []
    # the same state gives the same batch run keys (a repeated tick launches nothing twice)
    for iid in small:
        store.update_integration(iid, next_sync_at=T0)
    again = tick(defs, dagster_instance)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in t.run_requests if r.partition_key is None]


def test_sensor_skips_members_of_a_live_batch_run(store, db_url, dagster_instance):
    clock = Clock(T0)
    defs = sensor_defs(db_url, clock, batch_size=10)
    engine = engine_of(defs)
    ids = synced(store, engine, 4)
    live = dagster_instance.create_run_for_job(defs.resolve_job_def(batch_job_name("synthetic")),
                                               run_config=batch_run_config("synthetic", ids[:2]),
                                               tags={"integrations/provider": "synthetic"})
    t = tick(defs, dagster_instance)
    assert t.requested == ids[2:] and t.batches == [ids[2:]]
    assert t.log_mentions(f"integration {ids[0]}: skipped, Dagster run {live.run_id} is still not_started")


def test_batching_off_keeps_one_run_per_integration(store, db_url, dagster_instance):
    clock = Clock(T0)
    defs = sensor_defs(db_url, clock, batch_size=0)
    ids = synced(store, engine_of(defs), 3)
    t = tick(defs, dagster_instance)
    assert t.own_runs == ids and t.batches == []
    assert defs.resolve_sensor_def("synthetic_sync_sensor").job_name == "synthetic_sync"


def test_batch_io_manager_is_part_of_the_definitions(db_url):
    defs = fleet_app.make_defs(db_url)
    assert BATCH_IO_KEY in defs.resources
    assert defs.resolve_job_def(batch_job_name("synthetic")).executor_def.name == "in_process"


# --- cadence: one interval from due time to due time (pure) ----------------------------------------
class Row:
    def __init__(self, next_sync_at, health="healthy", interval=2):  # type: ignore[no-untyped-def]
        self.next_sync_at = next_sync_at
        self.health = health
        self.sync_interval_minutes = interval
        self.sync_cron = None
        self.enabled = True
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0


def test_sensor_claim_counts_the_interval_from_the_due_time():
    from integrations_dagster.engine.health import claim_next

    due_at = T0
    kw = dict(default_interval=None, multiplier=1.0)
    assert claim_next(Row(due_at), now=due_at + timedelta(seconds=25), **kw) == due_at + timedelta(minutes=2)
    # more than an interval late: one interval from now (a single sync, no burst of catch-ups)
    late = due_at + timedelta(minutes=3)
    assert claim_next(Row(due_at), now=late, **kw) == late + timedelta(minutes=2)
    assert claim_next(Row(due_at), now=due_at + timedelta(seconds=25), from_due=False, **kw) == (
        due_at + timedelta(seconds=25, minutes=2))
    assert claim_next(Row(due_at), now=due_at, default_interval=None, multiplier=2.0) == due_at + timedelta(minutes=4)


def test_a_scheduled_run_keeps_the_sensor_claim_unless_its_health_changed():
    from integrations_dagster.engine.health import HealthPolicy, after_run

    claim = T0 + timedelta(minutes=2)
    finished = T0 + timedelta(seconds=40)
    kw = dict(auth_failure=False, now=finished, default_interval=None, policy=HealthPolicy())
    assert after_run(integration=Row(claim), run_status="success", keep_claim=True, **kw)["next_sync_at"] == claim
    # the interval as a pause after the run (schedule_from="finish", or a manual run)
    assert after_run(integration=Row(claim), run_status="success", **kw)["next_sync_at"] == (
        finished + timedelta(minutes=2))
    # a failure makes it degraded (2x): the claim was made at 1x, so it is recomputed from now
    assert after_run(integration=Row(claim), run_status="failed", keep_claim=True, **kw)["next_sync_at"] == (
        finished + timedelta(minutes=4))
    # a run that outlived its claim: one interval from its end
    assert after_run(integration=Row(T0), run_status="success", keep_claim=True, **kw)["next_sync_at"] == (
        finished + timedelta(minutes=2))


# --- a batch step's members: retries and re-execution (pure) -----------------------------------------
def test_member_action_never_syncs_again_what_synced_in_the_run_group():
    from integrations_dagster.engine.fleet import DONE, FAILED_BEFORE, REOPEN, RESUME, START, PriorSync, member_action

    def prior(status: str, *, enumerated: bool = True, this_run: bool = False) -> PriorSync:
        return PriorSync(id=7, status=status, enumerated=enumerated, chunks=1, this_run=this_run)

    assert member_action(None, first_attempt=True) == START
    for status in ("success", "skipped"):  # synced (or single-flight skipped) in this run or an ancestor
        assert member_action(prior(status), first_attempt=True) == DONE
        assert member_action(prior(status, this_run=True), first_attempt=False) == DONE
    for status in ("partial", "failed", "processing"):
        assert member_action(prior(status), first_attempt=True) == REOPEN  # re-executed: failed items retried
        assert member_action(prior(status), first_attempt=False) == RESUME  # a retry of that step: not again
        assert member_action(prior(status, this_run=True), first_attempt=False) == RESUME
    # an enumeration that failed: not retried inside the run, started afresh by a re-execution
    assert member_action(prior("failed", enumerated=False, this_run=True), first_attempt=False) == FAILED_BEFORE
    assert member_action(prior("failed", enumerated=False), first_attempt=True) == START
    assert member_action(prior("enumerating", enumerated=False, this_run=True), first_attempt=False) == START


def test_health_checks_are_recorded_unless_a_healthy_integration_synced_cleanly_again():
    from integrations_dagster.engine.fleet import health_checks_unchanged

    clean = dict(health_before="healthy", last_status_before="success", enabled=True, status="success", failed=0)
    assert health_checks_unchanged(**clean)
    for change in ({"health_before": "degraded"}, {"last_status_before": "partial"}, {"last_status_before": None},
                   {"enabled": False}, {"status": "partial", "failed": 1}, {"failed": 2}, {"status": "failed"}):
        assert not health_checks_unchanged(**{**clean, **change}), change


def test_a_batch_records_health_checks_only_where_a_verdict_can_change(db_url, dagster_instance):
    ref = ref_for(db_url, batch_step_size=3)
    store = Store.for_url(db_url)
    ok, bad = (store.create_integration(provider_key="synthetic", name=n, metadata={"items": 2}).id
               for n in ("ok", "bad"))
    assert run_batch(ref, dagster_instance, [ok, bad]).success  # first syncs: checks recorded for both

    def checks(iid: int) -> int:  # evaluations of no_failed_items_holding_cursor recorded for the partition
        recs = dagster_instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=1000)
        return sum(1 for r in recs if r.event_log_entry.dagster_event.event_specific_data.partition == str(iid)
                   and r.event_log_entry.dagster_event.event_specific_data.check_name == "no_failed_items_holding_cursor")

    assert checks(ok) == 1 and checks(bad) == 1
    store.update_integration(ok, metadata={"items": 4})
    store.update_integration(bad, metadata={"items": 4})
    fleet_app.BROKEN.add(bad)
    assert not run_batch(ref, dagster_instance, [ok, bad], raise_on_error=False).success
    assert checks(ok) == 1  # healthy, synced cleanly again: its passing checks stand
    assert checks(bad) == 2  # failed items now hold its cursor: recorded at once
    assert store.get_integration(ok).cursor == checkpoint_for(3)
    assert [m["status"] for m in timeline(dagster_instance, ok)] == ["success", "success"]  # timeline: every run


def test_batch_runs_pool_the_dagster_instance_connections_once():
    from integrations_dagster.orchestration.batch import pool_dagster_connections

    class Instance:  # what pool_dagster_connections uses of a DagsterInstance
        def __init__(self) -> None:
            self.calls: list[dict] = []

        def optimize_for_webserver(self, **kw):  # type: ignore[no-untyped-def]
            self.calls.append(kw)

    one = Instance()
    pool_dagster_connections(one)
    pool_dagster_connections(one)
    assert one.calls == [{"statement_timeout": 0, "pool_recycle": 3600, "max_overflow": 3}]
    pool_dagster_connections(None)  # no instance (a direct invocation): nothing to do


def test_a_small_sync_in_a_batch_step_reads_its_integration_row_twice_plus_once_per_step(db_url, dagster_instance):
    """Per-sync work of a batch step (issue 11 point 1): each member's integration row is read once for
    the whole step (one query for its members), then once under start_run's lock and once under
    reconcile's; the chunk and the enumeration take the integration they are handed. Before: six reads
    per sync (two in the step, start_run, the chunk, reconcile, its health update). The statements and
    pool checkouts of a small sync are bounded too (PostgreSQL), so a new round trip per sync shows here."""
    from sqlalchemy import event

    ref = ref_for(db_url, chunk_size=100, batch_step_size=3)
    store = Store.for_url(db_url)
    ids = [store.create_integration(provider_key="synthetic", name=f"c{k}", metadata={"items": 3}).id
           for k in range(6)]
    assert run_batch(ref, dagster_instance, ids).success  # first syncs
    for iid in ids:
        store.update_integration(iid, metadata={"items": 5})  # two new items each
    statements: list[str] = []
    checkouts: list[int] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()))

    def on_checkout(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        checkouts.append(1)

    event.listen(store.engine, "before_cursor_execute", on_execute)
    event.listen(store.engine.pool, "checkout", on_checkout)
    try:
        assert run_batch(ref, dagster_instance, ids).success
    finally:
        event.remove(store.engine, "before_cursor_execute", on_execute)
        event.remove(store.engine.pool, "checkout", on_checkout)
    print(f"state statements per sync {len(statements) / len(ids):.1f}, pool checkouts per sync "
          f"{len(checkouts) / len(ids):.1f}")
    for iid in ids:  # every guarantee as before: its cursor, its items, its timeline
        assert store.get_integration(iid).cursor == checkpoint_for(4)
        assert [m["total"] for m in timeline(dagster_instance, iid)] == [2, 3]
    assert sorted(e for i, e in fleet_app.SEEN[-12:]) == sorted(["item-3", "item-4"] * 6)
    row_reads = [s for s in statements if s.startswith("SELECT")
                 and (" FROM integrations " in s or " JOIN integrations " in s or s.endswith(" FROM integrations"))]
    steps = len(step_groups(ids, 3))
    assert len(row_reads) == steps + 2 * len(ids), row_reads
    if not store.is_sqlite:
        per_sync = len(statements) / len(ids)
        assert per_sync <= 22, (per_sync, statements)
        assert len(checkouts) / len(ids) <= 11, len(checkouts) / len(ids)
