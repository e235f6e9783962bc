"""The retry policy (``engine.retry.after_failure``) as a pure function: no database, no listener."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integrations_dagster.engine.retry import after_failure
from integrations_dagster.errors import RateLimited
from integrations_dagster.settings import SyncSettings
from integrations_dagster.status import ItemStatus

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def item(attempts: int = 0, deferrals: int = 0, first: datetime | None = None) -> dict[str, object]:
    return {"id": 7, "attempts": attempts, "deferrals": deferrals, "first_attempt_at": first}


def settings(**kw: object) -> SyncSettings:
    return SyncSettings(database_url="sqlite:///unused.db", **kw)  # type: ignore[arg-type]


def test_genuine_failure_backs_off_by_the_schedule() -> None:
    s = settings(item_tries=5, item_backoff=[10, 30])
    d = after_failure(item(), ValueError("boom"), "retry", NOW, s)
    assert (d.status, d.attempts, d.deferrals) == (ItemStatus.PENDING, 1, 0)
    assert d.next_attempt_at == NOW + timedelta(seconds=10) and d.finished_at is None
    assert d.first_attempt_at == NOW and d.last_error == "ValueError: boom"
    d2 = after_failure(item(attempts=3, first=NOW), ValueError("x"), "retry", NOW, s)
    assert d2.next_attempt_at == NOW + timedelta(seconds=30)  # the last value repeats


def test_tries_used_up_fails_the_item() -> None:
    d = after_failure(item(attempts=4, first=NOW), ValueError("x"), "retry", NOW, settings(item_tries=5))
    assert d.failed and d.attempts == 5 and d.next_attempt_at is None and d.finished_at == NOW


def test_fatal_fails_at_once_whatever_the_tries() -> None:
    d = after_failure(item(), TypeError("bad payload"), "fatal", NOW, settings(item_tries=99))
    assert d.failed and d.attempts == 1


@pytest.mark.parametrize("retry_after", [0.0, -5.0])
def test_a_deferral_counts_no_attempt_and_waits_at_least_min_deferral(retry_after: float) -> None:
    d = after_failure(item(attempts=2), RateLimited(retry_after), "defer", NOW, settings(min_deferral=2.5))
    assert (d.status, d.attempts, d.deferrals) == (ItemStatus.PENDING, 2, 1)
    assert d.next_attempt_at == NOW + timedelta(seconds=2.5)


def test_retry_window_counts_from_the_first_attempt() -> None:
    first = NOW - timedelta(seconds=95)
    d = after_failure(item(attempts=1, first=first), ValueError("x"), "retry", NOW,
                      settings(item_backoff=[10], item_retry_window=100))
    assert d.failed and "retry window of 100 s exhausted" in d.last_error
    assert d.first_attempt_at == first


def test_naive_first_attempt_is_read_as_utc() -> None:
    naive = (NOW - timedelta(seconds=5)).replace(tzinfo=None)
    d = after_failure(item(attempts=1, first=naive), ValueError("x"), "retry", NOW, settings())
    assert d.first_attempt_at == NOW - timedelta(seconds=5)


def test_as_row_names_the_columns_the_store_writes() -> None:
    row = after_failure(item(), ValueError("x"), "retry", NOW, settings()).as_row()
    assert set(row) == {"b_id", "status", "attempts", "deferrals", "first_attempt_at", "next_attempt_at",
                        "finished_at", "last_error"}
    assert row["b_id"] == 7
