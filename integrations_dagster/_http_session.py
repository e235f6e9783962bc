"""Binds the HTTP layer to a sync run (filled in by the HTTP layer; None when unavailable)."""

from __future__ import annotations

from typing import Any


def http_factory_for(engine: Any, store: Any, provider: Any, integration: Any, run_id: int | None) -> Any:
    return None
