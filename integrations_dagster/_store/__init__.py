"""The framework's state store (private)."""

from ._store import Store, as_utc, utcnow

__all__ = ["Store", "as_utc", "utcnow"]
