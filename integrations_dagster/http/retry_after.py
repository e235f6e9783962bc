"""How long to wait: ``Retry-After`` parsing, rate-limit reset headers and jittered backoff.

Why a dedicated module: a wrong wait is either a hot loop (``Retry-After: 0`` retried at once,
hammering a server that already said "slow down") or a stuck run (``Retry-After: 86400``
honoured literally). Every wait computed here is clamped to ``[minimum, maximum]``, and
anything unparseable becomes ``default``, never zero.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

_DELTA_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")


def _clamp(value: float, minimum: float, maximum: float) -> float:
    return max(minimum, min(value, maximum))


def _to_datetime(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, datetime):
        return now if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(now), UTC)


def parse_retry_after(
    value: str | None,
    *,
    now: datetime | None = None,
    default: float = 60.0,
    minimum: float = 1.0,
    maximum: float = 900.0,
) -> float:
    """Seconds to wait for a ``Retry-After`` value (RFC 7231 §7.1.3).

    Accepts delta-seconds (``"120"``, also ``"1.5"``) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), resolved against ``now`` (UTC, defaults to the
    current time). The result is always within ``[minimum, maximum]``: ``0``, negative values
    and dates in the past become ``minimum`` (no hot loop); huge values become ``maximum``.
    Missing or garbage values give ``default`` (itself clamped).
    """
    if minimum > maximum:
        raise ValueError(f"minimum {minimum} > maximum {maximum}")
    if value is None:
        return _clamp(default, minimum, maximum)
    text = str(value).strip()
    if not text:
        return _clamp(default, minimum, maximum)
    if _DELTA_RE.match(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return _clamp(default, minimum, maximum)
        if when is None:
            return _clamp(default, minimum, maximum)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - _to_datetime(now)).total_seconds()
    if math.isnan(seconds):
        return _clamp(default, minimum, maximum)
    return _clamp(seconds, minimum, maximum)


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: Callable[[], float] | None = random.random,
) -> float:
    """Exponential backoff with "full jitter" for retry number ``attempt`` (1-based).

    The ceiling is ``min(cap, base * 2 ** (attempt - 1))`` and the delay is
    ``ceiling * jitter()`` with ``jitter()`` in ``[0, 1)``: many workers that failed together
    spread out instead of retrying in lock-step. ``jitter=None`` disables jitter (the ceiling is
    returned), which is useful for deterministic tests. The result is never above ``cap``.
    """
    exponent = min(max(attempt - 1, 0), 60)
    ceiling = min(cap, base * (2.0**exponent))
    if jitter is None:
        return max(0.0, ceiling)
    factor = min(max(float(jitter()), 0.0), 1.0)
    return max(0.0, ceiling * factor)


def _header(headers: Mapping[str, Any] | Any, name: str) -> str | None:
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, Mapping) and not hasattr(headers, "multi_items"):
        lower = name.lower()
        for key, val in headers.items():
            if str(key).lower() == lower:
                return str(val)
    return None if value is None else str(value)


def reset_delay(headers: Mapping[str, Any] | Any, now: datetime | float | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (epoch seconds) when ``X-RateLimit-Remaining`` is 0.

    Returns ``None`` when the quota is not exhausted or the headers are missing/garbage, so the
    caller falls back to its own default. A reset in the past gives ``0.0`` (the caller clamps).
    ``now`` is a datetime or epoch seconds (defaults to the current time).
    """
    remaining = _header(headers, "X-RateLimit-Remaining")
    reset = _header(headers, "X-RateLimit-Reset")
    if remaining is None or reset is None:
        return None
    try:
        if int(float(remaining.strip())) != 0:
            return None
        reset_at = float(reset.strip())
    except ValueError:
        return None
    if math.isnan(reset_at) or math.isinf(reset_at):
        return None
    now_ts = time.time() if now is None else _to_datetime(now).timestamp()
    return max(0.0, reset_at - now_ts)
