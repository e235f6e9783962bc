"""A failed chunk step names its failed items in a short text a person reads without a stack trace."""

from __future__ import annotations

from dagster import DagsterEventType, DagsterRunStatus

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.orchestration.failure_text import MAX_ERROR_CHARS, MAX_LISTED, ChunkFailure, short_error
from tests.support import app


def test_short_error_keeps_the_first_line_truncated():
    assert short_error("ValueError: bad\nTraceback (most recent call last):\n  File x") == "ValueError: bad"
    assert short_error(None) == "(no error message)"
    long = short_error("x" * 1000)
    assert len(long) == MAX_ERROR_CHARS and long.endswith("...")


def test_description_lists_items_then_how_to_recover():
    items = [(100 + i, f"ext-{i}", f"RuntimeError: boom {i}\n  File 'listener.py', line 3") for i in range(15)]
    text = ChunkFailure(integration_id=7, sync_run_id=3, chunk=2, failed_items=items, failed=15, succeeded=5,
                        tries=5).description()
    lines = text.splitlines()
    assert lines[0] == ("15 items of chunk 2 failed after 5 tries (sync run 3, integration 7); "
                        "the cursor holds before them.")
    assert lines[1] == "  item 100 (external id ext-0): RuntimeError: boom 0"
    assert len([ln for ln in lines if ln.startswith("  item ")]) == MAX_LISTED
    assert "... and 5 more: integrations list-failed-items --integration 7" in text
    assert "Re-execute this run From failure" in text and "skip-sync-item" in text
    assert "File 'listener.py'" not in text and "Traceback" not in text
    one = ChunkFailure(integration_id=7, sync_run_id=3, chunk=0, failed_items=items[:1], failed=1, succeeded=0,
                       tries=1).description()
    assert one.startswith("1 item of chunk 0 failed after 1 try (") and "holds before it." in one


def test_failed_run_step_failure_carries_the_text_and_item_metadata(store: Store, db_url, dagster_instance):
    app.reset()
    try:
        integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 30})
        app.POISON.update({"item-12", "item-15"})
        ref = DefinitionsRef("tests.support.app", "make_defs", {"database_url": db_url, "settings": {"chunk_size": 10}})
        run = execute_sync(ref, "synthetic", integ.id, instance=dagster_instance, log_level="CRITICAL")
    finally:
        app.reset()
    assert run.status == DagsterRunStatus.FAILURE
    failed = {f["external_id"]: f["id"] for f in store.failed_items(integration_id=integ.id)}
    [event] = dagster_instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    data = event.dagster_event.event_specific_data.user_failure_data
    assert data.description.splitlines()[:3] == [
        f"2 items of chunk 1 failed after 3 tries (sync run {store.runs_for_integration(integ.id)[0]['id']}, "
        f"integration {integ.id}); the cursor holds before them.",
        f"  item {failed['item-12']} (external id item-12): ValueError: poisoned item item-12",
        f"  item {failed['item-15']} (external id item-15): ValueError: poisoned item item-15",
    ]
    assert data.metadata["failed_item_ids"].value == [failed["item-12"], failed["item-15"]]
    assert "| item id | external id | error |" in data.metadata["failed_items"].value
    assert data.metadata["failed"].value == 2
