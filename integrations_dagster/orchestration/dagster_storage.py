"""Reading and adding the integrations' dynamic partitions, robust to an interrupted first start-up.

Dagster's default SQLite instance creates its event-log index (``history/runs/index.db``) the first
time a process opens a fresh ``DAGSTER_HOME``, and creates its tables only when that file did not
exist. A process killed in that window (measured by the kill -9 suite: a ``integrations sync`` killed
in its first second) leaves an empty ``index.db``; from then on every process, ours, the daemon's and
the webserver's, fails at its first partition call with "Using dynamic partitions definitions requires
the dynamic partitions table ... run `dagster instance migrate`", and the documented recovery
(``integrations sync ID --wait``) cannot run.

What we do about it: when a partition call reports the missing table and the instance holds no run
at all (nothing has ever run on it, so it is a first start-up that did not finish, not an old schema
awaiting a deliberate migration), run ``DagsterInstance.upgrade()`` (what ``dagster instance migrate``
runs; it creates the missing tables, the same schema as an uninterrupted start) and try once more.
An instance with runs gets the error with what to do, never a migration behind its operator's back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from dagster import DagsterInstance, DagsterInvalidInvocationError

logger = logging.getLogger("integrations_dagster")

T = TypeVar("T")

_MISSING_TABLE = "dynamic partitions table"


class DagsterStorageNotMigrated(RuntimeError):
    """Dagster's storage lacks a table (an older schema); the operator runs ``dagster instance migrate``."""


def _with_first_start_repair(instance: DagsterInstance, call: Callable[[], T]) -> T:
    try:
        return call()
    except DagsterInvalidInvocationError as exc:
        if _MISSING_TABLE not in str(exc):
            raise
        if instance.get_runs_count() > 0:
            raise DagsterStorageNotMigrated(
                f"{exc} This Dagster instance has runs, so integrations-dagster does not migrate it itself: "
                "run `dagster instance migrate` (with DAGSTER_HOME set), then try again."
            ) from exc
        logger.warning("Dagster's storage lacks its dynamic partitions table and holds no run: a first start-up "
                       "was interrupted. Completing it (what `dagster instance migrate` does).")
        instance.upgrade()
        return call()


def dynamic_partition_keys(instance: DagsterInstance, partitions_def_name: str) -> Sequence[str]:
    """``instance.get_dynamic_partitions``, completing an interrupted first start-up (module docstring)."""
    return _with_first_start_repair(instance, lambda: instance.get_dynamic_partitions(partitions_def_name))


def add_dynamic_partition(instance: DagsterInstance, partitions_def_name: str, key: str) -> None:
    """Add ``key`` to the dynamic partitions ``partitions_def_name`` unless it is there already."""

    def add() -> None:
        if not instance.has_dynamic_partition(partitions_def_name, key):
            instance.add_dynamic_partitions(partitions_def_name, [key])

    _with_first_start_repair(instance, add)
