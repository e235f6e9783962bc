"""Which steps of the partitioned ``<key>_sync`` job run: a run of one chunk (the small incremental sync)
is settled by its chunk step, and Dagster skips the reconcile step."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType

from integrations_dagster import DefinitionsRef, Store, execute_sync
from tests.support import app


@pytest.fixture(autouse=True)
def _reset_app():  # type: ignore[no-untyped-def]
    app.reset()
    yield
    app.reset()


def ref(db_url: str) -> DefinitionsRef:
    return DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "settings": {"chunk_size": 10}})


def _steps(instance, run_id: str, event_type) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.step_key for e in instance.all_logs(run_id, of_type=event_type)}


def test_a_run_of_one_chunk_settles_in_its_chunk_step_and_skips_the_reconcile_step(store: Store, db_url,
                                                                                     dagster_instance):
    """The chunk step that settles the run yields no output; when none of the run's chunk steps yields
    one, Dagster skips the reconcile step (nothing is left for it). Runs of several chunks still run it."""
    small = store.create_integration(provider_key="synthetic", name="small", metadata={"items": 5})
    run = execute_sync(ref(db_url), "synthetic", small.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START) == {
        "synthetic_enumerate", "synthetic_process_chunk[chunk_0]"}
    assert _steps(dagster_instance, run.run_id, DagsterEventType.STEP_SKIPPED) == {"synthetic_reconcile"}
    [sync_run] = store.runs_for_integration(small.id, limit=1)
    assert (sync_run["status"], sync_run["success_count"]) == ("success", 5)
    assert store.get_integration(small.id).cursor == "00000004"

    big = store.create_integration(provider_key="synthetic", name="big", metadata={"items": 25})
    run = execute_sync(ref(db_url), "synthetic", big.id, instance=dagster_instance)
    assert run.status.value == "SUCCESS"
    assert "synthetic_reconcile" in _steps(dagster_instance, run.run_id, DagsterEventType.STEP_START)
    assert store.get_integration(big.id).cursor == "00000024"
