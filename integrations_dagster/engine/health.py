"""Health and the next sync time, derived after every reconciled (or failed) run.

Defaults and why:
- ``degraded`` after 1 unsuccessful run in a row (partial or failed): one bad run is worth a
  slower cadence (2x) but not alarm.
- ``failing`` after 3 in a row: three misses means the cause is not transient; back off 10x so
  we stop hammering an API that is down for us.
- Authentication failures (401/403, or a provider's own signal) go to ``failing`` after 2 in a row:
  a refused token does not fix itself, so there is no point waiting for three.
- An integration disables itself only after ``auth_disable_after`` (default 10) consecutive auth
  failures: at the failing cadence that is hours of a refused token, long enough that a rotation in
  progress is not cut off, and it stops us from looking like an attacker to the API. Any other kind
  of failure never disables by itself (an outage must not need a human to undo).
- One fully successful run returns the integration to ``healthy``.
- A ``skipped`` run (another run was in flight) changes nothing: nothing ran, nothing was learnt.

``disabled`` and ``enabled = False`` always go together (see ``disable_values`` / ``enable_values``):
the sensor never schedules either, and only an operator re-enables, which also resets the counters
and makes the integration due at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator

from integrations_dagster.status import RunStatus

HEALTHY, DEGRADED, FAILING, DISABLED = "healthy", "degraded", "failing", "disabled"


class HealthPolicy(BaseModel):
    degraded_after: int = Field(default=1, ge=1, description="Consecutive unsuccessful runs before degraded.")
    failing_after: int = Field(default=3, ge=1, description="Consecutive unsuccessful runs before failing.")
    auth_failing_after: int = Field(default=2, ge=1, description="Consecutive auth failures before failing.")
    auth_disable_after: int | None = Field(
        default=10, description="Consecutive auth failures before the integration disables itself (None: never)."
    )
    degraded_multiplier: float = Field(default=2.0, ge=1, description="Interval multiplier while degraded.")
    failing_multiplier: float = Field(default=10.0, ge=1, description="Interval multiplier while failing.")

    @model_validator(mode="after")
    def _ordered(self) -> HealthPolicy:
        if self.failing_after < self.degraded_after:
            raise ValueError("failing_after must be >= degraded_after")
        if self.auth_disable_after is not None and self.auth_disable_after < self.auth_failing_after:
            raise ValueError("auth_disable_after must be >= auth_failing_after (or None)")
        return self

    def multiplier(self, health: str) -> float:
        return {DEGRADED: self.degraded_multiplier, FAILING: self.failing_multiplier}.get(health, 1.0)

    def derive(self, failures: int, auth_failures: int) -> str:
        if self.auth_disable_after is not None and auth_failures >= self.auth_disable_after:
            return DISABLED
        if failures >= self.failing_after or auth_failures >= self.auth_failing_after:
            return FAILING
        if failures >= self.degraded_after:
            return DEGRADED
        return HEALTHY


@dataclass(frozen=True)
class ScheduleUpdate:
    values: dict[str, Any]


def next_sync_time(
    *, now: datetime, interval_minutes: int | None, cron: str | None, multiplier: float
) -> datetime | None:
    """``now + interval x multiplier``; for cron, the next fire time after stretching the gap.

    Cron: the next fire time ``first`` after ``now`` is the healthy answer. With a multiplier ``m``
    the gap ``g`` between ``first`` and the fire time after it is stretched to ``m x g``: the answer
    is the first fire time at or after ``first + (m - 1) x g``. ``*/15`` degraded (2x) after a run at
    10:00:05 gives 10:30 (not 10:15), failing (10x) gives 12:30.
    """
    if cron:
        from integrations_dagster.engine.cron import next_cron_time

        first = next_cron_time(cron, now)
        if multiplier <= 1:
            return first
        second = next_cron_time(cron, first)
        target = first + (second - first) * (multiplier - 1)
        # croniter is strictly "after": step back a second so a fire time equal to target counts.
        return next_cron_time(cron, target - timedelta(seconds=1))
    if interval_minutes is None:
        return None
    return now + timedelta(minutes=interval_minutes * multiplier)


def after_run(
    *,
    integration: Any,
    run_status: str,
    auth_failure: bool,
    now: datetime,
    default_interval: int | None,
    policy: HealthPolicy,
    keep_claim: bool = False,
) -> dict[str, Any]:
    """The integration columns to write after a run ends with ``run_status``.

    ``keep_claim`` (a run the sync sensor launched, ``schedule_from="due"``): the sensor already moved
    ``next_sync_at`` one interval past the due time (``claim_next``); when the health is unchanged (the
    claim used the same multiplier) and that time is still ahead, it stays, so the cadence is one interval
    from due time to due time and does not drift by the run's queueing and duration. Otherwise the next
    time counts from ``now``."""
    if run_status == RunStatus.SUCCESS:
        failures, auth_failures = 0, 0
    elif run_status in (RunStatus.PARTIAL, RunStatus.FAILED):
        failures = integration.consecutive_failures + 1
        auth_failures = integration.consecutive_auth_failures + 1 if auth_failure else 0
    else:  # skipped: nothing ran
        return {}
    health = policy.derive(failures, auth_failures)
    values: dict[str, Any] = {
        "consecutive_failures": failures,
        "consecutive_auth_failures": auth_failures,
        "last_synced_at": now,
        "last_run_status": run_status,
    }
    if integration.health == DISABLED or not integration.enabled:
        values["health"] = DISABLED  # only an operator re-enables
    else:
        values["health"] = health
    if values["health"] == DISABLED:
        values["enabled"] = False
        if integration.enabled:
            values["disabled_reason"] = f"disabled automatically after {auth_failures} consecutive authentication failures"
        values["next_sync_at"] = None
    else:
        claimed = getattr(integration, "next_sync_at", None)
        if (keep_claim and values["health"] == integration.health and claimed is not None
                and _utc(claimed) > _utc(now)):
            values["next_sync_at"] = claimed
        else:
            values["next_sync_at"] = schedule_next(
                integration, now=now, default_interval=default_interval, multiplier=policy.multiplier(health)
            )
    return values


def _utc(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def claim_next(
    integration: Any, *, now: datetime, default_interval: int | None, multiplier: float, from_due: bool = True
) -> datetime | None:
    """The ``next_sync_at`` the sync sensor writes when it requests a sync of a due ``integration``.

    ``from_due``: one interval after the time it was due (its ``next_sync_at``), so ticks every 30 s do not
    add up to 30 s of drift per cycle; when that is already past (the integration is more than an interval
    late) one interval from ``now``, so a late integration syncs once, not in a burst of catch-ups.
    Without ``from_due``: one interval from ``now``."""
    due = getattr(integration, "next_sync_at", None)
    if from_due and due is not None:
        claim = schedule_next(integration, now=_utc(due), default_interval=default_interval, multiplier=multiplier)
        if claim is not None and claim > _utc(now):
            return claim
    return schedule_next(integration, now=now, default_interval=default_interval, multiplier=multiplier)


def schedule_next(integration: Any, *, now: datetime, default_interval: int | None, multiplier: float) -> datetime | None:
    """The next sync time of ``integration`` (its cron, else its interval, else the provider's default).

    An invalid cron expression must not break reconciliation: it falls back to the interval (and to
    "not scheduled" when there is none); ``validate_cron`` is where such expressions are refused.
    """
    from integrations_dagster.errors import IntegrationsError

    interval = integration.sync_interval_minutes or default_interval
    try:
        return next_sync_time(now=now, interval_minutes=interval, cron=integration.sync_cron, multiplier=multiplier)
    except (IntegrationsError, ValueError, KeyError):
        return next_sync_time(now=now, interval_minutes=interval, cron=None, multiplier=multiplier)


def disable_values(reason: str) -> dict[str, Any]:
    """Columns that disable an integration by hand (``store.update_integration(id, **disable_values(...))``)."""
    return {"enabled": False, "health": DISABLED, "disabled_reason": reason, "next_sync_at": None}


def enable_values(now: datetime) -> dict[str, Any]:
    """Columns that re-enable an integration: healthy, counters reset, due at once."""
    return {
        "enabled": True,
        "health": HEALTHY,
        "disabled_reason": None,
        "consecutive_failures": 0,
        "consecutive_auth_failures": 0,
        "next_sync_at": now,
    }


def counts_toward_health(*, counted: bool, status: str, newer_run: bool) -> bool:
    """Whether settling a run with ``status`` updates the integration's health (issue 9 point 11).

    A run counts once, when it is first settled. Settling it again (a re-execution, a retry or a
    skip reopened it) does not count it as one more unsuccessful run; only a run that is now a
    ``success`` and that no newer run has followed returns the integration to healthy (an operator
    fixed the latest run). Skipped runs never count (``after_run`` ignores them).
    """
    if not counted:
        return True
    return status == RunStatus.SUCCESS and not newer_run
