"""The per-provider sync sensors, ticked against a real Dagster instance on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from dagster import DefaultSensorStatus

from integrations_dagster import Store, engine_of
from integrations_dagster.engine.health import disable_values, enable_values
from integrations_dagster.orchestration.sensors import SyncSensorCursor, run_key_for
from tests.support.sched_app import make_defs
from tests.support.sched_tools import T0, Clock, tick


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def build(db_url: str, clock: Clock, **settings):  # type: ignore[no-untyped-def]
    defs = make_defs(db_url, settings=settings)
    engine_of(defs).clock = clock
    return defs


def make(store: Store, n: int = 1, *, provider: str = "synthetic", at=T0, **kw):  # type: ignore[no-untyped-def]
    return [store.create_integration(provider_key=provider, name=f"i{k}", metadata={"items": 2}, now=at, **kw)
            for k in range(n)]


def test_sensors_are_built_per_provider_with_configured_interval_and_status(db_url, clock):
    defs = build(db_url, clock)
    sensor = defs.resolve_sensor_def("synthetic_sync_sensor")
    assert sensor.minimum_interval_seconds == 30 and sensor.default_status == DefaultSensorStatus.RUNNING
    # it targets the partitioned job and the batch job (small due integrations share batch runs)
    assert sorted(j.name for j in sensor.jobs) == ["synthetic_sync", "synthetic_sync_batch"]
    assert sorted(j.name for j in defs.resolve_sensor_def("manual_sync_sensor").jobs) == [
        "manual_sync", "manual_sync_batch"]
    other = build(db_url, clock, sensor_interval_seconds=5, sensor_default_running=False)
    sensor = other.resolve_sensor_def("synthetic_sync_sensor")
    assert sensor.minimum_interval_seconds == 5 and sensor.default_status == DefaultSensorStatus.STOPPED


def test_new_integrations_get_partitions_and_runs_in_the_same_result(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    a, b = make(store, 2)
    t = tick(defs, dagster_instance)
    [add] = t.result.dynamic_partitions_requests
    assert add.partitions_def_name == "synthetic_integrations" and list(add.partition_keys) == [str(a.id), str(b.id)]
    assert t.requested == [a.id, b.id]  # a new integration is due at once
    req = t.run_requests[0]
    assert req.run_key == f"{a.id}:{T0.isoformat()}" == run_key_for(a.id, T0)
    assert req.tags["integrations/provider"] == "synthetic"
    assert req.tags["integrations/integration_id"] == str(a.id)
    assert req.tags["integrations/trigger"] == "schedule"
    assert req.tags["dagster/partition"] == str(a.id)
    assert sorted(dagster_instance.get_dynamic_partitions("synthetic_integrations")) == sorted([str(a.id), str(b.id)])
    assert t.log_mentions("2 due, 2 requested")


def test_deleted_integrations_lose_their_partition(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    a, b, c = make(store, 3)
    tick(defs, dagster_instance)
    store.delete_integration(b.id)
    d = make(store, 1)[0]
    t = tick(defs, dagster_instance)
    kinds = {type(r).__name__: list(r.partition_keys) for r in t.result.dynamic_partitions_requests}
    assert kinds == {"AddDynamicPartitionsRequest": [str(d.id)], "DeleteDynamicPartitionsRequest": [str(b.id)]}
    assert sorted(dagster_instance.get_dynamic_partitions("synthetic_integrations"), key=int) == [
        str(a.id), str(c.id), str(d.id)]
    # steady state: nothing to add or remove
    assert list(tick(defs, dagster_instance).result.dynamic_partitions_requests) == []


def test_due_and_not_due_with_time_controlled(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    now_due, later = make(store, 2, sync_interval_minutes=60)
    store.update_integration(later.id, next_sync_at=T0 + timedelta(minutes=5))
    assert tick(defs, dagster_instance).requested == [now_due.id]
    clock.advance(minutes=4, seconds=59)
    assert tick(defs, dagster_instance).requested == []
    clock.advance(seconds=1)  # next_sync_at <= now: due at exactly its time
    assert tick(defs, dagster_instance).requested == [later.id]


def test_requested_integration_is_claimed_so_the_next_tick_does_not_request_it_again(
    store, db_url, dagster_instance, clock
):
    defs = build(db_url, clock)
    a = make(store, 1, sync_interval_minutes=15)[0]
    first = tick(defs, dagster_instance)
    assert first.requested == [a.id]
    # claimed at the normal cadence: a lost run (cancelled in the queue, crashed worker) is retried then
    assert store.get_integration(a.id).next_sync_at == T0 + timedelta(minutes=15)
    assert tick(defs, dagster_instance).requested == []
    clock.advance(minutes=15)
    again = tick(defs, dagster_instance)
    assert again.requested == [a.id]
    # ... under a new run key, so Dagster's permanent run-key de-duplication cannot block the retry
    assert again.run_requests[0].run_key == f"{a.id}:{(T0 + timedelta(minutes=15)).isoformat()}"
    assert again.run_requests[0].run_key != first.run_requests[0].run_key


def test_ticks_that_saw_the_same_state_request_the_same_run_key(store, db_url, dagster_instance, clock):
    """Two concurrent ticks (or a tick retried by the daemon) read the same next_sync_at: their run
    requests carry the same run_key, which Dagster launches once."""
    defs = build(db_url, clock)
    a = make(store, 1)[0]
    one = tick(defs, dagster_instance)
    store.update_integration(a.id, next_sync_at=T0)  # the second tick read the row before the claim
    clock.advance(seconds=10)
    two = tick(defs, dagster_instance)
    assert [r.run_key for r in one.run_requests] == [r.run_key for r in two.run_requests] == [f"{a.id}:{T0.isoformat()}"]


def test_in_flight_sync_run_is_skipped_and_logged(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    engine = engine_of(defs)
    busy, free = make(store, 2)
    start = engine.start_run(store, busy.id, dagster_run_id=None)  # enumerating, owner unknown
    t = tick(defs, dagster_instance)
    assert t.requested == [free.id]
    assert t.log_mentions(f"integration {busy.id}: skipped, sync run {start.run_id} is still enumerating")
    assert t.log_mentions("2 due, 1 requested, 1 skipped in flight")
    # a skipped integration keeps its due time (it is not claimed)
    assert store.get_integration(busy.id).next_sync_at == T0


def test_sync_run_of_a_finished_dagster_run_is_abandoned_not_in_flight(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    engine = engine_of(defs)
    a = make(store, 1)[0]
    start = engine.start_run(store, a.id, dagster_run_id="0c0ffee0-dead-4bad-beef-000000000000")
    t = tick(defs, dagster_instance)
    assert t.requested == [a.id]
    assert t.log_mentions(f"sync run {start.run_id} (enumerating) was abandoned")


def test_enumeration_older_than_job_timeout_is_abandoned(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock, job_timeout=600)
    engine = engine_of(defs)
    a = make(store, 1)[0]
    engine.start_run(store, a.id, dagster_run_id=None)
    assert tick(defs, dagster_instance).requested == []
    clock.advance(seconds=601)
    assert tick(defs, dagster_instance).requested == [a.id]


def test_cap_per_tick_and_cursor_chain_reach_every_due_integration(store, db_url, dagster_instance, clock):
    """With more due integrations than the cap, the cursor carries the position to the next tick, so
    integrations stuck in flight at the head of the queue cannot starve the rest."""
    # with batching, at most sensor_max_integrations_per_tick are examined per tick (here 2, like the run cap)
    defs = build(db_url, clock, sensor_max_runs_per_tick=2, sensor_max_integrations_per_tick=2)
    engine = engine_of(defs)
    ids = [i.id for i in make(store, 5)]
    for iid in ids[:2]:
        engine.start_run(store, iid, dagster_run_id=None)  # the first page is in flight

    t1 = tick(defs, dagster_instance)
    assert (t1.requested, sorted(int(k) for k in t1.result.dynamic_partitions_requests[0].partition_keys)) == ([], ids)
    c1 = SyncSensorCursor.model_validate_json(t1.cursor)
    assert c1.after_id == ids[1] and c1.after_next_sync_at == T0
    assert t1.log_mentions(f"next tick continues after integration {ids[1]}")

    t2 = tick(defs, dagster_instance, cursor=t1.cursor)
    assert t2.requested == ids[2:4]
    t3 = tick(defs, dagster_instance, cursor=t2.cursor)
    assert t3.requested == [ids[4]]
    assert SyncSensorCursor.model_validate_json(t3.cursor).at_start  # end of the due list: start over
    t4 = tick(defs, dagster_instance, cursor=t3.cursor)
    assert t4.requested == [] and t4.log_mentions(f"integration {ids[0]}: skipped")


def test_unreadable_cursor_is_ignored(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    a = make(store, 1)[0]
    for bad in ("not json", json.dumps({"version": 7}), json.dumps({"after_id": "x", "after_next_sync_at": 3})):
        store.update_integration(a.id, next_sync_at=T0)
        t = tick(defs, dagster_instance, cursor=bad)
        assert t.requested == [a.id]
        assert t.log_mentions("ignoring")


def test_disabled_integrations_are_never_scheduled_until_re_enabled(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    paused, auto = make(store, 2)
    store.update_integration(paused.id, **disable_values("paused by an operator"))
    store.update_integration(auto.id, health="disabled", next_sync_at=T0)  # inconsistent row: still never
    clock.advance(days=30)
    assert tick(defs, dagster_instance).requested == []
    store.update_integration(paused.id, **enable_values(clock()))
    assert tick(defs, dagster_instance).requested == [paused.id]


def test_integration_without_any_interval_is_not_scheduled(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    bare = make(store, 1, provider="manual")[0]  # the provider has no default interval
    every5 = make(store, 1, provider="manual", sync_interval_minutes=5)[0]
    cron = make(store, 1, provider="manual", sync_cron="*/15 * * * *")[0]
    t = tick(defs, dagster_instance, provider_key="manual")
    assert t.requested == [every5.id, cron.id]
    # the claim follows the cron: next fire time after now
    assert store.get_integration(cron.id).next_sync_at == T0 + timedelta(minutes=15)
    assert str(bare.id) in dagster_instance.get_dynamic_partitions("manual_integrations")


def test_degraded_integration_is_claimed_with_its_multiplier(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    a = make(store, 1, sync_interval_minutes=10)[0]
    store.update_integration(a.id, health="failing")
    tick(defs, dagster_instance)
    assert store.get_integration(a.id).next_sync_at == T0 + timedelta(minutes=100)


def test_providers_are_independent(store, db_url, dagster_instance, clock):
    defs = build(db_url, clock)
    s = make(store, 1)[0]
    mnl = make(store, 1, provider="manual", sync_interval_minutes=1)[0]
    assert tick(defs, dagster_instance, provider_key="synthetic").requested == [s.id]
    assert tick(defs, dagster_instance, provider_key="manual").requested == [mnl.id]
    assert dagster_instance.get_dynamic_partitions("manual_integrations") == [str(mnl.id)]
