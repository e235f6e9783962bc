"""The states of sync runs and sync items, and the one vocabulary of a run's summary.

A leaf module (no imports from the package): the store, the engine, the operator actions, the
CLI and the Dagster layer all speak these names. Both enums are ``StrEnum``: a member *is* its
string (``RunStatus.SUCCESS == "success"``), so rows, JSON and metadata hold plain strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """``sync_runs.status``: enumerating -> processing -> success | partial | failed; or skipped."""

    ENUMERATING = "enumerating"
    PROCESSING = "processing"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    #: Never ran: another run of the integration was in flight (single flight).
    SKIPPED = "skipped"


class ItemStatus(StrEnum):
    """``sync_items.status``."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: A later version of the same external id completed: finished, holds no cursor, never retried.
    SUPERSEDED = "superseded"


#: Runs another sync of the same integration must wait for (single flight).
RUN_IN_FLIGHT: tuple[RunStatus, ...] = (RunStatus.ENUMERATING, RunStatus.PROCESSING)
#: Runs that were enumerated and may be (re)settled: their items can still change.
RUN_SETTLEABLE: tuple[RunStatus, ...] = (RunStatus.PROCESSING, RunStatus.PARTIAL, RunStatus.FAILED)
#: Runs whose chunks may still be claimed (re-execution reopens failed items of settled runs).
RUN_CLAIMABLE: tuple[RunStatus, ...] = (RunStatus.PROCESSING, RunStatus.PARTIAL, RunStatus.FAILED,
                                        RunStatus.SUCCESS)

#: Items still to run (the cursor waits for them).
UNFINISHED: tuple[ItemStatus, ...] = (ItemStatus.PENDING, ItemStatus.PROCESSING)
#: Items that let the cursor pass.
COMPLETED: tuple[ItemStatus, ...] = (ItemStatus.SUCCESS, ItemStatus.SKIPPED, ItemStatus.SUPERSEDED)
#: Items that will not run again by themselves.
TERMINAL: tuple[ItemStatus, ...] = (ItemStatus.SUCCESS, ItemStatus.FAILED, ItemStatus.SKIPPED,
                                     ItemStatus.SUPERSEDED)
#: Items a later completed version of the same external id may supersede (they have not completed).
SUPERSEDABLE: tuple[ItemStatus, ...] = (ItemStatus.PENDING, ItemStatus.PROCESSING, ItemStatus.FAILED)

#: The run summary's keys, the same in Dagster metadata (the sync timeline), ``SyncCompleted``,
#: ``ReconcileResult``, the CLI's text and ``--json`` output, the operator jobs and the docs.
#: (The ``sync_runs`` columns keep their historical names ``items_total``/``success_count``/...;
#: ``run_summary`` below is the one place that maps them.)
SUMMARY_KEYS: tuple[str, ...] = ("total", "succeeded", "failed", "skipped", "superseded")

#: Older spellings of the summary keys, still accepted when reading: the ``sync_runs`` columns,
#: Dagster metadata written before the names were unified (``items_total``/``success``) and the
#: CLI's former ``items``.
_SUMMARY_ALIASES: dict[str, tuple[str, ...]] = {
    "total": ("total", "items_total", "items"),
    "succeeded": ("succeeded", "success_count", "success"),
    "failed": ("failed", "failed_count"),
    "skipped": ("skipped", "skipped_count"),
    "superseded": ("superseded", "superseded_count"),
}


def run_summary(source: Mapping[str, Any]) -> dict[str, int]:
    """The run summary (``SUMMARY_KEYS``) of a ``sync_runs`` row, of timeline metadata written by
    any version, or of an earlier CLI ``--json`` document; a missing count reads as 0."""
    out: dict[str, int] = {}
    for key, names in _SUMMARY_ALIASES.items():
        value: Any = next((source[n] for n in names if n in source and source[n] is not None), 0)
        value = getattr(value, "value", value)  # a Dagster MetadataValue
        out[key] = int(value)
    return out
