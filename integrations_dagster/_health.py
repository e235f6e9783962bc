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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

HEALTHY, DEGRADED, FAILING, DISABLED = "healthy", "degraded", "failing", "disabled"


class HealthPolicy(BaseModel):
    degraded_after: int = Field(default=1, ge=1, description="Consecutive unsuccessful runs before degraded.")
    failing_after: int = Field(default=3, ge=1, description="Consecutive unsuccessful runs before failing.")
    auth_failing_after: int = Field(default=2, ge=1, description="Consecutive auth failures before failing.")
    auth_disable_after: int | None = Field(
        default=10, description="Consecutive auth failures before the integration disables itself (None: never)."
    )
    degraded_multiplier: float = Field(default=2.0, ge=1)
    failing_multiplier: float = Field(default=10.0, ge=1)

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
    """``now + interval x multiplier``; for cron, the next fire time after stretching the gap."""
    if cron:
        from ._cron import next_cron_time

        first = next_cron_time(cron, now)
        if multiplier <= 1:
            return first
        second = next_cron_time(cron, first)
        gap = (second - first) * multiplier
        return next_cron_time(cron, now + gap - timedelta(seconds=1))
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
) -> dict[str, Any]:
    """The integration columns to write after a run ends with ``run_status``."""
    if run_status == "success":
        failures, auth_failures = 0, 0
    elif run_status in ("partial", "failed"):
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
        interval = integration.sync_interval_minutes or default_interval
        values["next_sync_at"] = next_sync_time(
            now=now, interval_minutes=interval, cron=integration.sync_cron, multiplier=policy.multiplier(health)
        )
    return values
