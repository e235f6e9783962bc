"""Wait computations: Retry-After in every form, jittered backoff, rate-limit reset headers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from integrations_dagster.http import backoff_delay, parse_retry_after, reset_delay

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
CLAMP = {"default": 7.0, "minimum": 1.0, "maximum": 900.0}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("0", 1.0),  # never a hot loop
        ("-30", 1.0),
        ("86400", 900.0),  # huge -> capped
        ("99999999999999999999", 900.0),
        (None, 7.0),  # missing -> default
        ("", 7.0),
        ("soon", 7.0),  # garbage -> default
        ("12abc", 7.0),
        ("nan", 7.0),
        ("inf", 7.0),
    ],
)
def test_parse_retry_after_delta_and_garbage(value: str | None, expected: float) -> None:
    assert parse_retry_after(value, now=NOW, **CLAMP) == pytest.approx(expected)


def test_parse_retry_after_http_date_future_past_and_huge() -> None:
    in_90 = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(in_90, now=NOW, **CLAMP) == pytest.approx(90.0)
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, now=NOW, **CLAMP) == 1.0
    far = format_datetime(NOW + timedelta(days=3), usegmt=True)
    assert parse_retry_after(far, now=NOW, **CLAMP) == 900.0
    # RFC 850 and asctime forms are also HTTP-dates
    assert parse_retry_after("Saturday, 01-Mar-25 12:00:30 GMT", now=NOW, **CLAMP) == pytest.approx(30.0)
    assert parse_retry_after("Sat Mar  1 12:00:45 2025", now=NOW, **CLAMP) == pytest.approx(45.0)


def test_parse_retry_after_default_is_clamped_too() -> None:
    assert parse_retry_after(None, default=0.0, minimum=2.0, maximum=10.0) == 2.0
    assert parse_retry_after("junk", default=5000.0, minimum=2.0, maximum=10.0) == 10.0
    with pytest.raises(ValueError):
        parse_retry_after("1", default=1.0, minimum=5.0, maximum=1.0)


def test_backoff_grows_exponentially_and_is_capped_without_jitter() -> None:
    delays = [backoff_delay(a, base=0.5, cap=10.0, jitter=None) for a in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(10_000, base=0.5, cap=10.0, jitter=None) == 10.0  # no overflow


def test_backoff_full_jitter_scales_ceiling_and_stays_in_bounds() -> None:
    assert backoff_delay(3, base=1.0, cap=30.0, jitter=lambda: 0.25) == pytest.approx(1.0)
    assert backoff_delay(3, base=1.0, cap=30.0, jitter=lambda: 0.0) == 0.0
    # a misbehaving jitter source cannot push the delay outside [0, ceiling]
    assert backoff_delay(3, base=1.0, cap=30.0, jitter=lambda: 7.0) == 4.0
    assert backoff_delay(3, base=1.0, cap=30.0, jitter=lambda: -1.0) == 0.0
    import random

    rng = random.Random(1)
    samples = [backoff_delay(4, base=1.0, cap=5.0, jitter=rng.random) for _ in range(200)]
    assert all(0.0 <= s <= 5.0 for s in samples)
    assert len({round(s, 6) for s in samples}) > 150  # actually jittered


def test_reset_delay_only_when_exhausted() -> None:
    now = 1_700_000_000.0
    exhausted = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 42)})
    assert reset_delay(exhausted, now) == pytest.approx(42.0)
    assert reset_delay(exhausted, datetime.fromtimestamp(now, timezone.utc)) == pytest.approx(42.0)
    # plain dicts with any header case work too
    assert reset_delay({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 5)}, now) == 5.0
    left = httpx.Headers({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": str(int(now) + 42)})
    assert reset_delay(left, now) is None
    assert reset_delay(httpx.Headers({"X-RateLimit-Remaining": "0"}), now) is None
    assert reset_delay(httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "x"}), now) is None
    assert reset_delay(httpx.Headers({}), now) is None
    past = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) - 10)})
    assert reset_delay(past, now) == 0.0
