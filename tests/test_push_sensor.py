"""Issue 13: the push sensor notices pending mutations, launches push-only runs, coalesces rapid writes
(auto_sync_throttle) and never overlaps a run in flight; real sensor ticks, both databases."""

from __future__ import annotations

from dagster import DagsterRunStatus

from integrations_dagster import Store, engine_of, execute_sync
from integrations_dagster.engine.owner import current_owner
from integrations_dagster.store.outbox import Outbox
from tests.support import tether_app
from tests.support.sched_tools import Clock, tick


def test_push_sensor_requests_coalesces_and_waits_for_runs_in_flight(store: Store, db_url, dagster_instance) -> None:
    defs = tether_app.make_defs(db_url, {"auto_sync_throttle": 30}, sensors=True)
    engine = engine_of(defs)
    clock = Clock()
    engine.clock = clock
    sensor = defs.resolve_sensor_def("tether_push_sensor")
    assert sensor.minimum_interval_seconds == 5 and "auto_sync_throttle" in (sensor.description or "")
    a = store.create_integration(provider_key="tether", name="a", metadata={"base_url": "http://127.0.0.1:9"})
    b = store.create_integration(provider_key="tether", name="b", metadata={"base_url": "http://127.0.0.1:9"})
    quiet = store.create_integration(provider_key="tether", name="quiet", metadata={"base_url": "http://127.0.0.1:9"})
    box = Outbox(store)

    t0 = tick(defs, dagster_instance, "tether_push")
    assert t0.requested == []

    for k in range(5):  # rapid local writes: one run, not five
        box.record_now(a.id, entity="task", key=k, operation="create", payload={"title": "x"})
    box.record_now(b.id, entity="task", key=1, operation="create", payload={"title": "y"})
    held = engine.start_run(store, b.id, dagster_run_id=None, owner=current_owner(), direction="sync")
    t1 = tick(defs, dagster_instance, "tether_push")
    assert t1.requested == [a.id]  # b has a cycle in flight: never overlap it; quiet has nothing pending
    (req,) = t1.run_requests
    assert req.tags["integrations/direction"] == "push" and req.tags["integrations/trigger"] == "outbox"
    assert t1.log_mentions(f"integration {b.id}: pending mutations wait, sync run {held.run_id}")
    assert str(a.id) in dagster_instance.get_dynamic_partitions("tether_integrations")

    clock.advance(seconds=10)
    box.record_now(a.id, entity="task", key=9, operation="create", payload={"title": "z"})
    t2 = tick(defs, dagster_instance, "tether_push", cursor=t1.cursor)
    assert t2.requested == [] and t2.log_mentions("coalesced")  # inside the 30 s throttle

    clock.advance(seconds=25)
    t3 = tick(defs, dagster_instance, "tether_push", cursor=t2.cursor)
    assert t3.requested == [a.id] and t3.run_requests[0].run_key != req.run_key
    assert quiet.id not in t3.requested


def test_the_requested_push_run_pushes(store: Store, db_url, dagster_instance) -> None:
    from providers.tether.fake_server import TetherState, serve

    state = TetherState()
    srv = serve(state)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        defs = tether_app.make_defs(db_url, sensors=True)
        integ = store.create_integration(provider_key="tether", name="a", metadata={"base_url": url})
        Outbox(store).record_now(integ.id, entity="task", key=1, operation="create", payload={"title": "x"})
        (req,) = tick(defs, dagster_instance, "tether_push").run_requests
        from integrations_dagster import DefinitionsRef

        ref = DefinitionsRef("tests.support.tether_app", "make_defs", {"database_url": db_url})
        run = execute_sync(ref, "tether", integ.id, instance=dagster_instance,
                           direction=req.tags["integrations/direction"], trigger=req.tags["integrations/trigger"])
        assert run.status == DagsterRunStatus.SUCCESS and state.records[("task", "1")]["title"] == "x"
        assert Outbox(store).counts(integ.id)["pending"] == 0
        assert tick(defs, dagster_instance, "tether_push").requested == []
    finally:
        srv.shutdown()
        srv.server_close()
