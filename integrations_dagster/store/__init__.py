"""The framework's state store (private)."""

from integrations_dagster.store.store import Store, as_utc, utcnow

__all__ = ["Store", "as_utc", "utcnow"]
