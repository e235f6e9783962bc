"""Event types: the per-item base class and the framework's run-level events."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class SyncItemEvent(BaseModel):
    """Base class for per-item events a provider dispatches.

    Subclass it with the fields a listener needs. Events are stored as JSON between enumeration and
    processing (they may run in another process), so fields must be JSON-serialisable.
    """

    model_config = ConfigDict(extra="forbid")


class SyncCompleted(BaseModel):
    """Fired once when a run reconciles with every item success or skipped."""

    integration_id: int
    provider_key: str
    sync_run_id: int
    cursor_before: Any = None
    cursor_after: Any = None
    items_total: int = 0
    success_count: int = 0
    skipped_count: int = 0


class SyncItemFailed(BaseModel):
    """Fired once per item that exhausted its retries, when its run reconciles."""

    integration_id: int
    provider_key: str
    sync_run_id: int
    item_id: int
    external_id: str | None = None
    attempts: int = 0
    error: str | None = None
