"""Event types: the per-item base class and the framework's run-level events."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


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
    #: The run summary (``status.SUMMARY_KEYS``); the older names are accepted on input and readable.
    total: int = Field(default=0, validation_alias=AliasChoices("total", "items_total"))
    succeeded: int = Field(default=0, validation_alias=AliasChoices("succeeded", "success_count"))
    skipped: int = Field(default=0, validation_alias=AliasChoices("skipped", "skipped_count"))

    @property
    def items_total(self) -> int:
        return self.total

    @property
    def success_count(self) -> int:
        return self.succeeded

    @property
    def skipped_count(self) -> int:
        return self.skipped


class SyncItemFailed(BaseModel):
    """Fired once per item that exhausted its retries, when its run reconciles."""

    integration_id: int
    provider_key: str
    sync_run_id: int
    item_id: int
    external_id: str | None = None
    attempts: int = 0
    error: str | None = None


class InvalidPayload(SyncItemEvent):
    """An item whose payload failed validation during enumeration (see ``SyncSession.dispatch_invalid``).

    It is tracked like any item, with its raw payload, and fails at once without running listeners:
    the run goes red, the cursor holds before it, and an operator sees it and can skip it.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    field: str | None = None
    error: str
    raw: Any = None


class InvalidPayloadError(Exception):
    """Raised for an ``InvalidPayload`` item: no retry can make a malformed payload valid."""
