"""The operator actions as Dagster jobs (Launchpad) and the daily prune schedule, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultScheduleStatus,
    build_schedule_context,
)
from sqlalchemy import update

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.store import models as m
from integrations_dagster.store import utcnow
from providers.synthetic import checkpoint_for
from tests.support import app

JOBS = ["integrations_skip_item", "integrations_retry_failed_items", "integrations_advance_cursor",
        "integrations_prune"]


@pytest.fixture(autouse=True)
def _reset_app():  # type: ignore[no-untyped-def]
    app.reset()
    yield
    app.reset()


def ref(db_url: str) -> DefinitionsRef:
    return DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "settings": {"chunk_size": 10}})


def launch(db_url: str, instance, job: str, op: str, config: dict):  # type: ignore[no-untyped-def]
    return ref(db_url).load().resolve_job_def(job).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, instance=instance, raise_on_error=False
    )


def poisoned_sync(store: Store, db_url: str, instance, poison: set[str], items: int = 30, tenant: str = "default"):  # type: ignore[no-untyped-def]
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": items}, tenant=tenant)
    app.POISON.update(poison)
    execute_sync(ref(db_url), "synthetic", integ.id, instance=instance)
    failed = {i["external_id"]: i["id"] for i in store.failed_items(integration_id=integ.id)}
    assert set(failed) == poison
    return integ, failed


def failure_text(result) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events
                     if e.is_step_failure)


def test_jobs_and_daily_prune_schedule_are_defined_with_described_config(db_url):
    defs = ref(db_url).load()
    for name in JOBS:
        job = defs.resolve_job_def(name)
        assert job.description
        (node,) = job.graph.node_defs
        fields = node.config_schema.config_type.fields
        assert fields and all(f.description for f in fields.values()), name
    skip_fields = defs.resolve_job_def("integrations_skip_item").graph.node_defs[0].config_schema.config_type.fields
    assert set(skip_fields) == {"item_id", "reason", "tenant"} and skip_fields["item_id"].is_required
    schedule = defs.resolve_schedule_def("integrations_prune_daily")
    assert (schedule.cron_schedule, schedule.job_name, schedule.default_status) == (
        "0 3 * * *", "integrations_prune", DefaultScheduleStatus.RUNNING)
    requests = schedule.evaluate_tick(build_schedule_context()).run_requests
    assert len(requests) == 1


def test_skip_job_skips_the_item_and_moves_the_cursor(store, db_url, dagster_instance):
    integ, failed = poisoned_sync(store, db_url, dagster_instance, {"item-12"})
    assert store.get_integration(integ.id).cursor == checkpoint_for(11)
    result = launch(db_url, dagster_instance, "integrations_skip_item", "skip_item",
                    {"item_id": failed["item-12"], "reason": "bad data upstream"})
    assert result.success
    item = store.get_item(failed["item-12"])
    assert (item["status"], item["skip_reason"]) == ("skipped", "bad data upstream")
    assert store.get_integration(integ.id).cursor == checkpoint_for(29)
    out = result.output_for_node("skip_item")
    assert (out["run_status"], out["cursor_after"]) == ("success", checkpoint_for(29))
    records = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(["integrations", "synthetic"]), asset_partitions=[str(integ.id)]),
        limit=10,
    ).records
    descriptions = [r.event_log_entry.asset_materialization.description for r in records]
    assert any(d and d.startswith(f"skip item {failed['item-12']}") for d in descriptions)


def test_skip_job_fails_clearly_for_an_unknown_or_foreign_item(store, db_url, dagster_instance):
    integ, failed = poisoned_sync(store, db_url, dagster_instance, {"item-3"}, items=5, tenant="acme")
    result = launch(db_url, dagster_instance, "integrations_skip_item", "skip_item",
                    {"item_id": failed["item-3"], "tenant": "globex"})
    assert not result.success and f"sync item {failed['item-3']} not found" in failure_text(result)
    assert store.get_item(failed["item-3"])["status"] == "failed"
    result = launch(db_url, dagster_instance, "integrations_skip_item", "skip_item", {"item_id": 999999})
    assert not result.success and "sync item 999999 not found" in failure_text(result)
    del integ


def test_retry_failed_items_job(store, db_url, dagster_instance):
    integ, failed = poisoned_sync(store, db_url, dagster_instance, {"item-12", "item-20"})
    app.POISON.discard("item-12")  # one cause is fixed
    result = launch(db_url, dagster_instance, "integrations_retry_failed_items", "retry_failed_items",
                    {"integration_id": integ.id})
    assert not result.success  # item-20 still fails: the run is red and says so
    assert "1 of 2 failed items" in failure_text(result)
    assert store.get_item(failed["item-12"])["status"] == "success"
    assert store.get_integration(integ.id).cursor == checkpoint_for(19)
    app.POISON.clear()
    result = launch(db_url, dagster_instance, "integrations_retry_failed_items", "retry_failed_items",
                    {"integration_id": integ.id})
    assert result.success and result.output_for_node("retry_failed_items")["succeeded"] == 1
    assert store.get_integration(integ.id).cursor == checkpoint_for(29)


def test_advance_cursor_job_reclaims_stuck_items(store, db_url, dagster_instance):
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 30})
    execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    run_id = store.runs_for_integration(integ.id)[0]["id"]
    # a worker died holding three items of the last chunk long ago; the run never settled
    t = m.sync_items
    long_ago = utcnow() - timedelta(hours=2)
    with store.begin() as conn:
        conn.execute(update(t).where(t.c.run_id == run_id, t.c.external_id.in_(["item-25", "item-26", "item-27"]))
                     .values(status="processing", claimed_at=long_ago, finished_at=None))
        conn.execute(update(m.sync_runs).where(m.sync_runs.c.id == run_id)
                     .values(status="processing", finished_at=None))
    result = launch(db_url, dagster_instance, "integrations_advance_cursor", "advance_cursor",
                    {"integration_id": integ.id})
    assert result.success
    out = result.output_for_node("advance_cursor")
    assert len(out["reclaimed_items"]) == 3 and out["runs"][0]["status"] == "partial"
    assert {i["external_id"] for i in store.failed_items(integration_id=integ.id)} == {"item-25", "item-26", "item-27"}


def test_prune_job_keeps_failed_rows(store, db_url, dagster_instance):
    integ, failed = poisoned_sync(store, db_url, dagster_instance, {"item-4"}, items=10)
    with store.begin() as conn:
        conn.execute(update(m.sync_items).values(finished_at=utcnow() - timedelta(days=40)))
    result = launch(db_url, dagster_instance, "integrations_prune", "prune", {"days": 30})
    assert result.success and result.output_for_node("prune")["sync_items_deleted"] == 9
    assert [i["id"] for i in store.items_for_run(store.runs_for_integration(integ.id)[0]["id"])] == [failed["item-4"]]
    result = launch(db_url, dagster_instance, "integrations_prune", "prune", {"days": -1})
    assert not result.success


def test_operator_job_runs_do_not_disturb_sync_runs(store, db_url, dagster_instance):
    """Re-executing the failed sync run from failure still works after operator jobs touched its items."""
    from integrations_dagster import reexecute_from_failure

    integ, failed = poisoned_sync(store, db_url, dagster_instance, {"item-12", "item-20"})
    assert launch(db_url, dagster_instance, "integrations_skip_item", "skip_item",
                  {"item_id": failed["item-12"]}).success
    app.POISON.clear()
    parent = store.runs_for_integration(integ.id)[0]["dagster_run_id"]
    child = reexecute_from_failure(ref(db_url), parent, instance=dagster_instance)
    assert child.status == DagsterRunStatus.SUCCESS
    assert store.get_integration(integ.id).cursor == checkpoint_for(29)
    assert store.get_item(failed["item-12"])["status"] == "skipped"
