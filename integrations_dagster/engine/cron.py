"""Cron expressions (seed 001's ``*/15 * * * *``), evaluated in UTC unless they name a timezone.

A timezone is named with a ``TZ=Area/City`` prefix, as cron itself does: ``TZ=Europe/Paris 0 9 * * *``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from integrations_dagster.errors import IntegrationsError


def split_tz(expr: str) -> tuple[str, ZoneInfo | None]:
    expr = expr.strip()
    if expr.startswith(("TZ=", "CRON_TZ=")):
        head, _, rest = expr.partition(" ")
        name = head.split("=", 1)[1]
        try:
            return rest.strip(), ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise IntegrationsError(f"unknown timezone {name!r} in cron expression {expr!r}") from exc
    return expr, None


def validate_cron(expr: str) -> str:
    body, _ = split_tz(expr)
    if not croniter.is_valid(body):
        raise IntegrationsError(f"invalid cron expression {expr!r} (expected 5 fields like '*/15 * * * *')")
    return expr


def next_cron_time(expr: str, after: datetime) -> datetime:
    body, tz = split_tz(expr)
    start = after.astimezone(tz or UTC)
    nxt: datetime = croniter(body, start).get_next(datetime)
    return nxt.astimezone(UTC)
