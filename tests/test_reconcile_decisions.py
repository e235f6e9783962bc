"""Reconcile's decisions as pure functions over a plain record (no database)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from integrations_dagster.engine.reconcile import (
    CURSOR_ERROR,
    already_settled,
    reconcilable,
    run_error_after,
    settlement_changed,
)
from integrations_dagster.status import RunStatus

T = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Run:
    status: str = RunStatus.SUCCESS
    enumerated_at: datetime | None = T
    finished_at: datetime | None = T
    success_count: int = 3
    failed_count: int = 0
    skipped_count: int = 1
    superseded_count: int = 0
    cursor_after: Any = "c9"
    error: str | None = None


COUNTS = {"success": 3, "failed": 0, "skipped": 1}


def test_reconcilable() -> None:
    assert reconcilable(Run())
    assert reconcilable(Run(status=RunStatus.PROCESSING, finished_at=None))
    assert reconcilable(Run(status=RunStatus.FAILED))  # enumerated, then failed items: settleable
    assert not reconcilable(Run(status=RunStatus.ENUMERATING, enumerated_at=None))
    assert not reconcilable(Run(status=RunStatus.SKIPPED))
    assert not reconcilable(Run(status=RunStatus.FAILED, enumerated_at=None))  # discarded enumeration


def test_already_settled_needs_same_status_counts_and_no_cursor_error() -> None:
    assert already_settled(Run(), RunStatus.SUCCESS, COUNTS)
    assert not already_settled(Run(finished_at=None), RunStatus.SUCCESS, COUNTS)
    assert not already_settled(Run(), RunStatus.PARTIAL, COUNTS)
    assert not already_settled(Run(), RunStatus.SUCCESS, {**COUNTS, "skipped": 2})
    assert not already_settled(Run(error=CURSOR_ERROR + "reducer raised"), RunStatus.SUCCESS, COUNTS)
    assert already_settled(Run(error="enumeration note"), RunStatus.SUCCESS, COUNTS)


def test_run_error_after() -> None:
    assert run_error_after(None, None) is None
    assert run_error_after("other", None) == "other"
    assert run_error_after(CURSOR_ERROR + "old", None) is None  # fixed: cleared
    assert run_error_after(CURSOR_ERROR + "old", "new") == CURSOR_ERROR + "new"
    assert run_error_after("other", "new") == CURSOR_ERROR + "new"


def test_settlement_changed_on_any_column() -> None:
    run = Run()
    assert not settlement_changed(run, RunStatus.SUCCESS, COUNTS, "c9", None)
    assert settlement_changed(run, RunStatus.SUCCESS, COUNTS, "c10", None)
    assert settlement_changed(run, RunStatus.PARTIAL, COUNTS, "c9", None)
    assert settlement_changed(run, RunStatus.SUCCESS, {**COUNTS, "failed": 1}, "c9", None)
    assert settlement_changed(run, RunStatus.SUCCESS, COUNTS, "c9", "boom")
    assert settlement_changed(replace(run, finished_at=None), RunStatus.SUCCESS, COUNTS, "c9", None)
