"""Which steps of the partitioned ``<key>_sync`` job run: a run of one chunk (the small incremental sync)
runs its listeners and settles in its enumerate step, and Dagster skips the reconcile step; items that
fail there go on to the chunk step, which reports them and is what "Re-execute from failure" re-runs."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType

from integrations_dagster import DefinitionsRef, Store, execute_sync, reexecute_from_failure
from tests.support import app


@pytest.fixture(autouse=True)
def _reset_app():  # type: ignore[no-untyped-def]
    app.reset()
    yield
    app.reset()


def ref(db_url: str, **settings: object) -> DefinitionsRef:
    return DefinitionsRef("tests.support.app", "make_defs",
                          {"database_url": db_url, "settings": {"chunk_size": 10, **settings}})


def _steps(instance, run_id: str, event_type) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.step_key for e in instance.all_logs(run_id, of_type=event_type)}


def test_a_run_of_one_chunk_settles_in_its_enumerate_step_and_skips_the_other_steps(store: Store, db_url,
                                                                                       dagster_instance):
    """One chunk: its listeners run in the enumerate step, which settles the run and yields nothing, so
    Dagster runs no chunk step and skips the reconcile step. Runs of several chunks keep their steps."""
    small = store.create_integration(provider_key="synthetic", name="small", metadata={"items": 5})
    run = execute_sync(ref(db_url), "synthetic", small.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START) == {"synthetic_enumerate"}
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_SKIPPED) == {"synthetic_reconcile"}
    # the timeline's materialization comes from the step that settled the run
    assert _steps(dagster_instance, run.run_id, DagsterEventType.ASSET_MATERIALIZATION) == {"synthetic_enumerate"}
    [sync_run] = store.runs_for_integration(small.id, limit=1)
    assert (sync_run["status"], sync_run["success_count"]) == ("success", 5)
    assert sorted(app.SEEN) == [f"item-{i}" for i in range(5)]
    assert store.get_integration(small.id).cursor == "00000004"

    big = store.create_integration(provider_key="synthetic", name="big", metadata={"items": 25})
    run = execute_sync(ref(db_url), "synthetic", big.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert {"synthetic_process_chunk[chunk_0]", "synthetic_reconcile"} <= _steps(
        dagster_instance, run.run_id, DagsterEventType.STEP_START)
    assert store.get_integration(big.id).cursor == "00000024"


def test_with_the_setting_off_a_run_of_one_chunk_settles_in_its_chunk_step(store: Store, db_url, dagster_instance):
    small = store.create_integration(provider_key="synthetic", name="small", metadata={"items": 5})
    run = execute_sync(ref(db_url, one_chunk_in_enumerate=False), "synthetic", small.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START) == {
        "synthetic_enumerate", "synthetic_process_chunk[chunk_0]"}
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_SKIPPED) == {"synthetic_reconcile"}
    assert store.get_integration(small.id).cursor == "00000004"


def test_an_item_that_fails_in_the_enumerate_step_is_reported_by_the_chunk_step_and_retried_from_failure(
        store: Store, db_url, dagster_instance):
    """A one-chunk run whose item fails: the enumerate step does not fail (re-executing it would
    enumerate again); the chunk step runs, fails naming the item, the cursor holds below it; "Re-execute
    from failure" re-runs only that step, which retries the item, and the cursor moves on."""
    app.POISON.add("item-2")
    small = store.create_integration(provider_key="synthetic", name="small", metadata={"items": 5})
    run = execute_sync(ref(db_url), "synthetic", small.id, instance=dagster_instance)
    assert run.status.value == "FAILURE"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_SUCCESS) == {"synthetic_enumerate"}
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_FAILURE) == {"synthetic_process_chunk[chunk_0]"}
    [failure] = dagster_instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    assert "item-2" in failure.dagster_event.step_failure_data.user_failure_data.description
    assert app.CALLS["item-2"] == 3  # item_tries, all in the enumerate step: the chunk step did not run it again
    [sync_run] = store.runs_for_integration(small.id, limit=1)
    assert (sync_run["status"], sync_run["success_count"], sync_run["failed_count"]) == ("partial", 4, 1)
    assert store.get_integration(small.id).cursor == "00000001"  # held below the failed item

    app.POISON.clear()
    child = reexecute_from_failure(ref(db_url), run.run_id, instance=dagster_instance)
    assert child.status.value == "SUCCESS"
    assert "synthetic_enumerate" not in _steps(dagster_instance, child.run_id, DagsterEventType.STEP_START)
    assert app.CALLS["item-2"] == 4
    assert store.get_integration(small.id).cursor == "00000004"


def test_an_item_waiting_for_a_long_retry_is_handed_to_the_chunk_step(store: Store, db_url, dagster_instance):
    """A retry wait longer than inline_wait_max is not slept in the enumerate step: the chunk step takes the
    item over (Dagster's RetryRequested) and the run succeeds."""
    app.RATE_LIMITED["item-1"] = 1
    small = store.create_integration(provider_key="synthetic", name="small", metadata={"items": 5})
    run = execute_sync(ref(db_url, inline_wait_max=0.0, min_deferral=0.05), "synthetic", small.id,
                       instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert "synthetic_process_chunk[chunk_0]" in _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START)
    assert app.CALLS["item-1"] == 2
    assert store.get_integration(small.id).cursor == "00000004"


def test_a_run_on_postgresql_storage_reuses_its_dagster_connections(pg_store: Store, pg_url: str,
                                                                      worker_id: str) -> None:
    """dagster-postgres opens a connection (and a server process) per event write by default; a sync run
    pools them (``IntegrationsResource.setup_for_execution``): far fewer sessions than events."""
    import time

    import psycopg
    from dagster import instance_for_test

    from tests.conftest import DB_PREFIX, PG_ADMIN_URL

    name = f"{DB_PREFIX}_{worker_id}_dagster_pool".replace("-", "_")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')

    def sessions() -> int:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            last, stable_since = -1, time.monotonic()
            while time.monotonic() - stable_since < 1.5:  # statistics reach pg_stat_database with a delay
                admin.execute("SELECT pg_stat_clear_snapshot()")
                row = admin.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
                now = int(row[0]) if row else 0
                if now != last:
                    last, stable_since = now, time.monotonic()
                time.sleep(0.2)
            return last

    dagster_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": dagster_url}}}) as instance:
            first = pg_store.create_integration(provider_key="synthetic", name="first", metadata={"items": 5})
            execute_sync(ref(pg_url), "synthetic", first.id, instance=instance)  # tables created, warmed
            three_chunks = pg_store.create_integration(provider_key="synthetic", name="big", metadata={"items": 25})
            before = sessions()
            run = execute_sync(ref(pg_url), "synthetic", three_chunks.id, instance=instance)
            after = sessions()
            assert run.status.value == "SUCCESS"
            events = len(instance.all_logs(run.run_id))
        assert events >= 30
        assert after - before <= 12, (after - before, events)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
