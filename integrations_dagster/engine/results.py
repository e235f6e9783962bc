"""What each engine step answers: typed records the Dagster ops, the CLI and the tests read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Callback telling whether the Dagster run that owns a sync run can still make progress:
#: True (queued/running), False (finished or unknown to the instance), None (cannot tell).
RunAliveCheck = Callable[[str | None], bool | None]


def display(value: Any) -> str:
    """A cursor (or any JSON value) as one line of text: ``null`` or sorted-key JSON."""
    return "null" if value is None else json.dumps(value, sort_keys=True, default=str)


@dataclass
class StartResult:
    run_id: int | None
    skipped_reason: str | None = None
    #: The integration as the new run starts from it (``authoring.Integration``: its row read under the
    #: start's lock, the cursor the run recorded as ``cursor_before``); None when skipped.
    integration: Any = None

    @property
    def skipped(self) -> bool:
        return self.run_id is None


@dataclass
class EnumerationResult:
    run_id: int
    items: int
    chunks: int
    #: The chunks that have pending items, in order (the others were applied at write: nothing left for
    #: a chunk step); None: every chunk has.
    pending_chunks: list[int] | None = None

    def chunks_to_run(self) -> list[int]:
        """The chunks that need a chunk step."""
        return list(range(self.chunks)) if self.pending_chunks is None else list(self.pending_chunks)


@dataclass
class ChunkResult:
    run_id: int
    chunk: int
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    wait_seconds: float = 0.0
    failed_items: list[tuple[int, str | None, str]] = field(default_factory=list)


@dataclass
class ReconcileResult:
    run_id: int
    integration_id: int
    provider_key: str
    final: bool
    changed: bool
    status: str
    cursor_before: Any
    cursor_after: Any
    total: int
    succeeded: int
    failed: int
    skipped: int
    pending: int
    superseded: int = 0
    request_count: int = 0
    duration_seconds: float | None = None
    request_ids: list[int] = field(default_factory=list)
    #: Issue 13: ``sync`` / ``push`` / ``pull`` for a provider that pushes, and what its push did.
    direction: str | None = None
    push_summary: dict[str, int] | None = None

    def as_metadata(self) -> dict[str, Any]:
        push: dict[str, Any] = {}
        if self.direction is not None:
            summary = self.push_summary or {}
            push = {"direction": self.direction, "pushed": int(summary.get("pushed", 0)),
                    "push_conflicts": int(summary.get("conflicts", 0)),
                    "push_rejected": int(summary.get("failed", 0)),
                    "push_retried": int(summary.get("retried", 0))}
        return push | {
            "status": self.status,
            "sync_run_id": self.run_id,
            "cursor_before": display(self.cursor_before),
            "cursor_after": display(self.cursor_after),
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "superseded": self.superseded,
            "requests": self.request_count,
            "request_ids": display(self.request_ids),
            "duration_seconds": round(self.duration_seconds or 0.0, 3),
        }

    # Read-only spellings from before the summary vocabulary was unified (``status.SUMMARY_KEYS``).
    @property
    def items_total(self) -> int:
        return self.total

    @property
    def success_count(self) -> int:
        return self.succeeded

    @property
    def failed_count(self) -> int:
        return self.failed

    @property
    def skipped_count(self) -> int:
        return self.skipped

    @property
    def pending_count(self) -> int:
        return self.pending

    @property
    def superseded_count(self) -> int:
        return self.superseded
