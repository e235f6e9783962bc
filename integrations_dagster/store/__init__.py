"""The framework's state store (private).

Names resolve on first use, so ``store.quick`` (the CLI's SQLAlchemy-free read path) and
``store.revisions`` can be imported without importing SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Store", "as_utc", "utcnow"]

if TYPE_CHECKING:
    from integrations_dagster.store.store import Store, as_utc, utcnow


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("integrations_dagster.store.store"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
