"""The ``RateLimit`` value object: a budget of requests per period."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` requests per ``period_seconds``; shared by every run that uses one integration."""

    limit: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_seconds <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and a positive period, got {self!r}")

    @classmethod
    def per_hour(cls, n: int) -> RateLimit:
        return cls(n, 3600.0)

    @classmethod
    def per_minute(cls, n: int) -> RateLimit:
        return cls(n, 60.0)

    @classmethod
    def per_second(cls, n: int) -> RateLimit:
        return cls(n, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "period_seconds": self.period_seconds}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> RateLimit | None:
        if not value:
            return None
        return cls(int(value["limit"]), float(value["period_seconds"]))
