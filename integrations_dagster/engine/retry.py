"""The retry policy: what happens to an item whose listener failed. A pure function.

``kind`` says how the listener failed: ``retry`` (a genuine failure: counts an attempt, backs off
by ``SyncSettings.item_backoff``), ``defer`` (``RateLimited``: no attempt counted, waits the
server's time but at least ``min_deferral``) or ``fatal`` (no retry can help: fails at once). An
item fails when its tries are used up or its next try would fall outside ``item_retry_window``
(counted from its first attempt, deferrals included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from integrations_dagster.errors import RateLimited
from integrations_dagster.settings import SyncSettings
from integrations_dagster.status import ItemStatus

FailureKind = Literal["retry", "defer", "fatal"]
_MAX_ERROR = 4000


@dataclass(frozen=True)
class RetryDecision:
    """An item's new state after a failed attempt (``status`` is pending (retry later) or failed)."""

    item_id: int
    status: ItemStatus
    attempts: int
    deferrals: int
    first_attempt_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_error: str

    @property
    def failed(self) -> bool:
        return self.status == ItemStatus.FAILED

    def as_row(self) -> dict[str, Any]:
        """The columns to write (``b_id`` is the item id; see ``store.items.write_outcomes``)."""
        return {
            "b_id": self.item_id, "status": self.status, "attempts": self.attempts, "deferrals": self.deferrals,
            "first_attempt_at": self.first_attempt_at, "next_attempt_at": self.next_attempt_at,
            "finished_at": self.finished_at, "last_error": self.last_error,
        }


def after_failure(
    item: Mapping[str, Any], exc: BaseException, kind: str, now: datetime, settings: SyncSettings
) -> RetryDecision:
    """The new state of ``item`` (keys ``id``, ``attempts``, ``deferrals``, ``first_attempt_at``;
    times aware UTC or None) after its listener raised ``exc`` of ``kind`` at ``now``."""
    s = settings
    first = item["first_attempt_at"] or now
    if first.tzinfo is None:  # SQLite hands back naive datetimes: they were written as UTC
        from datetime import UTC

        first = first.replace(tzinfo=UTC)
    attempts = int(item["attempts"]) + (0 if kind == "defer" else 1)
    deferrals = int(item["deferrals"]) + (1 if kind == "defer" else 0)
    error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]

    def decided(status: ItemStatus, next_at: datetime | None, last_error: str = error) -> RetryDecision:
        return RetryDecision(item_id=int(item["id"]), status=status, attempts=attempts, deferrals=deferrals,
                             first_attempt_at=first, next_attempt_at=next_at,
                             finished_at=now if status == ItemStatus.FAILED else None, last_error=last_error)

    if kind == "fatal" or (kind == "retry" and attempts >= s.item_tries):
        return decided(ItemStatus.FAILED, None)
    # A deferral waits at least min_deferral: RateLimited(0) must not retry in a busy loop.
    wait = max(exc.retry_after, s.min_deferral) if isinstance(exc, RateLimited) else s.backoff_for(attempts)
    next_at = now + timedelta(seconds=wait)
    if next_at > first + timedelta(seconds=s.item_retry_window):
        return decided(ItemStatus.FAILED, None,
                       f"{error} (retry window of {s.item_retry_window:g} s exhausted)"[:_MAX_ERROR])
    return decided(ItemStatus.PENDING, next_at)
