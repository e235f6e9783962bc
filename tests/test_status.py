"""One run-summary vocabulary: the metadata, the event, the result record and the CLI speak the same keys,
and older spellings (``sync_runs`` columns, metadata written before the names were unified) still read."""

from __future__ import annotations

from integrations_dagster import SyncCompleted
from integrations_dagster.engine.results import ReconcileResult
from integrations_dagster.status import SUMMARY_KEYS, run_summary


def _result() -> ReconcileResult:
    return ReconcileResult(run_id=1, integration_id=2, provider_key="p", final=True, changed=True, status="partial",
                           cursor_before=None, cursor_after="c", total=5, succeeded=3, failed=1, skipped=1, pending=0)


def test_timeline_metadata_uses_the_summary_keys() -> None:
    md = _result().as_metadata()
    assert {k: md[k] for k in SUMMARY_KEYS} == {"total": 5, "succeeded": 3, "failed": 1, "skipped": 1, "superseded": 0}
    assert not {"items_total", "success", "items", "success_count"} & set(md)
    assert run_summary(md) == {"total": 5, "succeeded": 3, "failed": 1, "skipped": 1, "superseded": 0}


def test_old_spellings_still_read() -> None:
    row = {"items_total": 7, "success_count": 6, "failed_count": 1, "skipped_count": 0}  # a sync_runs row
    old_metadata = {"items_total": 7, "success": 6, "failed": 1, "skipped": 0}          # timeline before
    old_cli = {"items": 7, "succeeded": 6, "failed": 1, "skipped": 0}                    # CLI --json before
    expected = {"total": 7, "succeeded": 6, "failed": 1, "skipped": 0, "superseded": 0}
    assert run_summary(row) == run_summary(old_metadata) == run_summary(old_cli) == expected
    assert run_summary({"items_total": None}) == dict.fromkeys(SUMMARY_KEYS, 0)


def test_sync_completed_event_speaks_the_vocabulary_and_accepts_old_names() -> None:
    new = SyncCompleted(integration_id=1, provider_key="p", sync_run_id=3, total=4, succeeded=3, skipped=1)
    old = SyncCompleted(integration_id=1, provider_key="p", sync_run_id=3, items_total=4, success_count=3,
                        skipped_count=1)
    assert new == old and (new.total, new.succeeded, new.skipped) == (4, 3, 1)
    assert (old.items_total, old.success_count, old.skipped_count) == (4, 3, 1)
    assert {"total", "succeeded", "skipped"} <= set(new.model_dump())
    result = _result()
    assert (result.items_total, result.success_count, result.failed_count) == (5, 3, 1)
