"""Asset checks per integration partition: ``no_failed_items_holding_cursor`` and ``synced_within_interval``."""

from __future__ import annotations

import json

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterEventType, EventRecordsFilter

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.orchestration.checks import (
    NO_FAILED_ITEMS,
    SYNCED_WITHIN_INTERVAL,
    failed_items_outcome,
    freshness_outcome,
)
from tests.support import app

KEY = AssetKey(["integrations", "synthetic"])
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset_app():  # type: ignore[no-untyped-def]
    app.reset()
    yield
    app.reset()


def ref(db_url: str) -> DefinitionsRef:
    return DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "settings": {"chunk_size": 10}})


def evaluations(instance, integration_id: int, name: str) -> list:  # type: ignore[no-untyped-def]
    """Check evaluations of one partition, oldest first, read from the instance's event log."""
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    )
    out = []
    for r in records:
        ev = r.event_log_entry.dagster_event.event_specific_data
        if ev.asset_key == KEY and ev.check_name == name and ev.partition == str(integration_id):
            out.append(ev)
    return out


def integ(**kw):  # type: ignore[no-untyped-def]
    base = dict(enabled=True, health="healthy", disabled_reason=None, consecutive_failures=0, sync_cron=None,
                sync_interval_minutes=10, last_synced_at=NOW - timedelta(minutes=5), next_sync_at=NOW + timedelta(minutes=5),
                last_run_status="success", created_at=NOW - timedelta(days=1))
    base.update(kw)
    return SimpleNamespace(**base)


# --- pure decisions ---------------------------------------------------------------------------------
def test_failed_items_outcome_names_count_and_oldest_item():
    assert failed_items_outcome([]).passed
    rows = [{"id": 9, "external_id": "b", "last_error": "later", "run_id": 2},
            {"id": 4, "external_id": "a", "last_error": "x" * 2000, "run_id": 1}]
    out = failed_items_outcome(rows)
    assert not out.passed and out.severity == "ERROR"
    assert out.metadata["failed_items"] == 2
    assert out.metadata["oldest_failed_item_id"] == 4
    assert out.metadata["oldest_failed_external_id"] == "a"
    assert len(out.metadata["oldest_failed_error"]) <= 500
    assert "item 4" in out.description


def test_freshness_passes_on_time_warns_when_late_by_more_than_its_interval():
    assert freshness_outcome(integ(), now=NOW, default_interval=None).passed
    # due 5 minutes ago: late, but by less than its 10-minute interval
    assert freshness_outcome(integ(next_sync_at=NOW - timedelta(minutes=5)), now=NOW, default_interval=None).passed
    late = freshness_outcome(integ(next_sync_at=NOW - timedelta(minutes=11)), now=NOW, default_interval=None)
    assert not late.passed and late.severity == "WARN" and late.metadata["late_seconds"] == 660
    # the provider's default interval applies when the integration has none
    late = freshness_outcome(integ(sync_interval_minutes=None, next_sync_at=NOW - timedelta(minutes=61)),
                             now=NOW, default_interval=60)
    assert not late.passed and late.severity == "WARN"
    # never synced, no next time: due since creation
    assert not freshness_outcome(integ(last_synced_at=None, next_sync_at=None), now=NOW, default_interval=None).passed


def test_freshness_fails_with_error_when_disabled_or_failing():
    out = freshness_outcome(integ(enabled=False, health="disabled", disabled_reason="token revoked"), now=NOW,
                            default_interval=None)
    assert not out.passed and out.severity == "ERROR" and "token revoked" in out.description
    out = freshness_outcome(integ(health="failing", consecutive_failures=3, last_run_status="failed"), now=NOW,
                            default_interval=None)
    assert not out.passed and out.severity == "ERROR" and "failing" in out.description


# --- recorded by runs and operator jobs, read from the instance ------------------------------------------
def test_checks_are_declared_on_the_asset(db_url):
    defs = ref(db_url).load()
    keys = defs.resolve_asset_graph().asset_check_keys
    assert AssetCheckKey(KEY, NO_FAILED_ITEMS) in keys
    assert AssetCheckKey(KEY, SYNCED_WITHIN_INTERVAL) in keys


def test_reconcile_records_checks_red_then_operator_skip_turns_them_green(store: Store, db_url, dagster_instance):
    integration = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 30},
                                           sync_interval_minutes=10)
    app.POISON.update({"item-12"})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)
    [failed] = store.failed_items(integration_id=integration.id)
    [red] = evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)
    assert not red.passed and red.severity == AssetCheckSeverity.ERROR
    assert red.metadata["failed_items"].value == 1
    assert red.metadata["oldest_failed_item_id"].value == failed["id"]
    assert red.metadata["oldest_failed_external_id"].value == "item-12"
    assert "item-12" in red.metadata["oldest_failed_error"].value
    [fresh] = evaluations(dagster_instance, integration.id, SYNCED_WITHIN_INTERVAL)
    assert fresh.passed  # one partial run: degraded, not failing, and it just ran

    result = ref(db_url).load().resolve_job_def("integrations_skip_item").execute_in_process(
        run_config={"ops": {"skip_item": {"config": {"item_id": failed["id"]}}}}, instance=dagster_instance,
        raise_on_error=False)
    assert result.success
    latest = evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)[-1]
    assert latest.passed and latest.metadata["failed_items"].value == 0


def test_retry_job_records_checks_and_a_failing_integration_fails_freshness(store: Store, db_url, dagster_instance):
    integration = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 20})
    store.update_integration(integration.id, consecutive_failures=2)
    app.POISON.update({"item-3"})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # third failure: failing
    fresh = evaluations(dagster_instance, integration.id, SYNCED_WITHIN_INTERVAL)[-1]
    assert not fresh.passed and fresh.severity == AssetCheckSeverity.ERROR
    app.POISON.clear()
    result = ref(db_url).load().resolve_job_def("integrations_retry_failed_items").execute_in_process(
        run_config={"ops": {"retry_failed_items": {"config": {"integration_id": integration.id}}}},
        instance=dagster_instance, raise_on_error=False)
    assert result.success
    assert evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)[-1].passed


# --- the health sensor: operator actions outside Dagster and lateness ------------------------------------
def tick(sensor, instance, db_url: str, cursor: str | None):  # type: ignore[no-untyped-def]
    from dagster import build_sensor_context

    from integrations_dagster.orchestration.resource import IntegrationsResource

    ctx = build_sensor_context(instance=instance, cursor=cursor,
                               resources={"integrations": IntegrationsResource(database_url=db_url)})
    data = sensor.evaluate_tick(ctx)
    return {(e.check_name, e.partition): e for e in data.asset_events}, data.cursor


def test_health_sensor_records_cli_skips_and_lateness(store: Store, db_url, dagster_instance):
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.orchestration.checks import build_health_sensor
    from integrations_dagster.orchestration.definitions import engine_of

    engine = engine_of(ref(db_url).load())
    sensor = build_health_sensor(engine)
    never_synced = store.create_integration(provider_key="synthetic", name="no partition yet")
    integration = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 30},
                                           sync_interval_minutes=10)
    app.POISON.update({"item-12"})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)
    [failed] = store.failed_items(integration_id=integration.id)
    pid = str(integration.id)

    events, cursor = tick(sensor, dagster_instance, db_url, None)
    assert set(events) == {(NO_FAILED_ITEMS, pid), (SYNCED_WITHIN_INTERVAL, pid)}  # no partition: not evaluated
    assert not events[(NO_FAILED_ITEMS, pid)].passed
    assert set(json.loads(cursor)) == {pid}  # the never-synced integration has no partition yet
    events, _ = tick(sensor, dagster_instance, db_url, cursor)
    assert events == {}  # nothing changed: nothing recorded

    ops.skip_item(store, engine, failed["id"], reason="bad data")  # what `integrations skip-sync-item` does
    events, cursor = tick(sensor, dagster_instance, db_url, cursor)
    assert events[(NO_FAILED_ITEMS, pid)].passed

    store.update_integration(integration.id, next_sync_at=engine.clock() - timedelta(minutes=11))
    events, cursor = tick(sensor, dagster_instance, db_url, cursor)
    late = events[(SYNCED_WITHIN_INTERVAL, pid)]
    assert not late.passed and late.severity == AssetCheckSeverity.WARN


def test_executing_the_checks_from_the_ui_records_one_evaluation_per_partition(store: Store, db_url, dagster_instance):
    integration = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 30})
    store.create_integration(provider_key="synthetic", name="never synced: no partition")
    app.POISON.update({"item-12"})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)
    [failed] = store.failed_items(integration_id=integration.id)
    store.update_integration(integration.id, consecutive_failures=0)
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.orchestration.definitions import engine_of

    defs = ref(db_url).load()
    ops.skip_item(store, engine_of(defs), failed["id"], reason="bad data")  # outside Dagster
    keys = {AssetCheckKey(KEY, NO_FAILED_ITEMS), AssetCheckKey(KEY, SYNCED_WITHIN_INTERVAL)}
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=keys, asset_selection=set())
    assert job.execute_in_process(instance=dagster_instance).success  # what the UI's "Execute" runs
    assert evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)[-1].passed
    partitioned = [r for r in dagster_instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION))
        if r.event_log_entry.dagster_event.event_specific_data.partition is not None]
    assert {r.event_log_entry.dagster_event.event_specific_data.partition for r in partitioned} == {str(integration.id)}


def test_a_clean_sync_of_a_healthy_integration_leaves_its_checks_as_recorded(store: Store, db_url, dagster_instance):
    """The partitioned job, as a batch step (``engine.fleet.health_checks_unchanged``): the checks are
    recorded when a verdict may change, not on every clean sync (two Dagster events saved per sync)."""
    integration = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 5})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # first: recorded
    assert len(evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)) == 1
    store.update_integration(integration.id, metadata={"items": 8})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # clean, was healthy
    assert len(evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)) == 1
    assert len(evaluations(dagster_instance, integration.id, SYNCED_WITHIN_INTERVAL)) == 1

    store.update_integration(integration.id, metadata={"items": 12})
    app.POISON.update({"item-10"})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # partial: recorded red
    assert not evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)[-1].passed
    app.POISON.clear()
    store.update_integration(integration.id, metadata={"items": 14})
    execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # after a partial: recorded
    reds = evaluations(dagster_instance, integration.id, NO_FAILED_ITEMS)
    assert len(reds) == 3 and reds[-1].passed == (not store.failed_items(integration_id=integration.id))



# --- health checks at scale: a bounded tick ----------------------------------------------------------------
def test_changed_evaluations_records_at_most_limit_failing_first_and_defers_the_rest():
    from integrations_dagster.orchestration.checks import changed_evaluations

    fleet = [integ(id=i, provider_key="p") for i in range(1, 6)]
    fleet[3].next_sync_at = NOW - timedelta(minutes=30)  # id 4: late, a failing verdict
    args = dict(now=NOW, default_intervals={"p": 10}, partitions={"p": {str(i) for i in range(1, 6)}})

    changed, cursor = changed_evaluations(fleet, [], previous={}, limit=2, **args)
    assert [i.id for i, _ in changed] == [4, 1]  # the failing verdict first, then in order
    assert set(cursor) == {"1", "4"}  # the deferred ones have no fingerprint yet: changed next tick
    changed, cursor = changed_evaluations(fleet, [], previous=cursor, limit=2, **args)
    assert [i.id for i, _ in changed] == [2, 3]
    changed, cursor = changed_evaluations(fleet, [], previous=cursor, limit=2, **args)
    assert [i.id for i, _ in changed] == [5]
    changed, full = changed_evaluations(fleet, [], previous=cursor, limit=2, **args)
    assert changed == [] and full == cursor and set(full) == {str(i) for i in range(1, 6)}

    # an integration recorded before whose verdict changed, deferred: keeps its old fingerprint
    for i in (1, 2, 3):
        fleet[i - 1].next_sync_at = NOW - timedelta(minutes=30)
    changed, later = changed_evaluations(fleet, [], previous=full, limit=2, **args)
    assert [i.id for i, _ in changed] == [1, 2] and later["3"] == full["3"] != later["1"]
    changed, _ = changed_evaluations(fleet, [], previous=later, limit=2, **args)
    assert [i.id for i, _ in changed] == [3]
    assert changed_evaluations(fleet, [], previous={}, limit=None, **args)[0].__len__() == 5


def test_health_sensor_records_a_bounded_number_of_integrations_per_tick(store: Store, db_url, dagster_instance):
    """2,000 integrations made the first tick return 4,000 evaluations, each written by the daemon on its
    own: minutes during which no other sensor ticked (docs/BENCHMARKS.md, Fleet). Now at most
    ``max_integrations_per_tick`` per tick; the others follow on the next ticks, none lost."""
    from integrations_dagster.orchestration.checks import build_health_sensor
    from integrations_dagster.orchestration.definitions import engine_of

    engine = engine_of(ref(db_url).load())
    sensor = build_health_sensor(engine, max_integrations_per_tick=2)
    ids = []
    for k in range(3):
        integration = store.create_integration(provider_key="synthetic", name=f"s{k}", metadata={"items": 3},
                                               sync_interval_minutes=10)
        execute_sync(ref(db_url), "synthetic", integration.id, instance=dagster_instance)  # adds its partition
        ids.append(str(integration.id))
    seen: list[set[str]] = []
    cursor = None
    for _ in range(3):
        events, cursor = tick(sensor, dagster_instance, db_url, cursor)
        assert len(events) <= 4
        seen.append({p for _, p in events})
    assert seen[0] | seen[1] == set(ids) and not seen[0] & seen[1] and len(seen[0]) == 2
    assert seen[2] == set()  # all recorded: nothing more


def test_the_projects_dagster_yaml_runs_each_sensor_tick_on_a_thread(tmp_path, monkeypatch):
    """A slow tick of one sensor (the health sensor's first over thousands of integrations) must not
    hold back the sync sensors: Dagster evaluates sensors one after the other unless ``sensors:
    use_threads``."""
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        settings = instance.get_settings("sensors")
    assert settings.get("use_threads") is True and settings.get("num_workers", 0) >= 4
