"""The states of sync runs and sync items, and the one vocabulary of a run's summary.

A leaf module (no imports from the package): the store, the engine, the operator actions, the
CLI and the Dagster layer all speak these names. Both enums are ``StrEnum``: a member *is* its
string (``RunStatus.SUCCESS == "success"``), so rows, JSON and metadata hold plain strings.
"""

from __future__ import annotations

from enum import StrEnum


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

#: The run summary's keys, the same in Dagster metadata, events, the CLI's JSON and the docs.
SUMMARY_KEYS: tuple[str, ...] = ("items_total", "success", "failed", "skipped", "superseded")
