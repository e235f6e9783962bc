"""Starting a sync run under single flight, and telling whether an in-flight run is dead."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from integrations_dagster.engine.owner import owner_alive
from integrations_dagster.engine.results import RunAliveCheck, StartResult
from integrations_dagster.errors import IntegrationNotFound
from integrations_dagster.status import RUN_SETTLEABLE, RunStatus
from integrations_dagster.store import Store, as_utc
from integrations_dagster.store import runs as run_sql

if TYPE_CHECKING:
    from integrations_dagster.engine.engine import SyncEngine


def run_alive(run: Any, is_run_alive: RunAliveCheck | None) -> bool | None:
    """Whether an in-flight sync run can still make progress: its recorded owner process gone from
    this host means dead (whatever Dagster says: a killed in-process run stays STARTED); else the
    Dagster run's answer; else the owner process still being there."""
    own = owner_alive(getattr(run, "owner_host", None), getattr(run, "owner_pid", None))
    alive = is_run_alive(run.dagster_run_id) if is_run_alive else None
    if own is False:
        return False
    return own if alive is None else alive


def start_run(
    engine: SyncEngine,
    store: Store,
    integration_id: int,
    *,
    dagster_run_id: str | None,
    trigger: str = "manual",
    is_run_alive: RunAliveCheck | None = None,
    owner: Any = None,
    direction: str | None = None,
) -> StartResult:
    """Create a sync run unless another run of this integration is still in flight.

    In-flight runs whose owner is known to be dead are cleaned up first: an abandoned enumeration
    is discarded (its items never counted); an abandoned processing run has its unfinished items
    failed so the cursor holds at them and an operator can retry or skip, and is reconciled before
    the new run reads the cursor (its ``cursor_before``). A run is dead when its recorded owner
    process (``owner``: ``engine.owner.RunOwner``, for runs executed outside the daemon) is gone
    from this host, or ``is_run_alive`` says so; an enumeration older than ``job_timeout`` is
    presumed dead only when neither can tell. A run reported alive is never discarded.
    """
    now = engine.clock()
    abandoned: list[int] = []
    with store.begin() as conn:
        row = run_sql.lock_integration(store, conn, integration_id)
        if row is None:
            raise IntegrationNotFound(integration_id)
        for run in run_sql.in_flight(conn, integration_id):
            if run.dagster_run_id is not None and run.dagster_run_id == dagster_run_id:
                continue
            alive = run_alive(run, is_run_alive)
            stale = as_utc(run.started_at) < now - timedelta(seconds=engine.settings.job_timeout)
            if run.status == RunStatus.ENUMERATING and (alive is False or (alive is None and stale)):
                run_sql.discard_enumeration(conn, run.id, "abandoned: enumeration never finished", now)
                continue
            if run.status == RunStatus.PROCESSING and alive is False:
                run_sql.fail_unfinished(conn, run.id, "abandoned: the Dagster run ended before this item ran", now)
                abandoned.append(run.id)
                continue
            reason = (
                f"integration {integration_id} already has sync run {run.id} in flight "
                f"(status {run.status}, Dagster run {run.dagster_run_id}); this sync is skipped"
            )
            run_sql.insert_run(
                conn, integration_id=integration_id, dagster_run_id=dagster_run_id, status=RunStatus.SKIPPED,
                trigger=trigger, cursor_before=row.cursor, cursor_after=row.cursor, error=reason,
                started_at=now, finished_at=now, direction=direction,
            )
            return StartResult(run_id=None, skipped_reason=reason)
        run_id = run_sql.insert_run(
            conn, integration_id=integration_id, dagster_run_id=dagster_run_id, status=RunStatus.ENUMERATING,
            trigger=trigger, cursor_before=row.cursor, started_at=now, direction=direction,
            owner_host=getattr(owner, "host", None), owner_pid=getattr(owner, "pid", None),
        )
    for old in abandoned:  # settle the runs we just failed: partial/failed with counts, cursor held
        engine.reconcile(store, old)
    if abandoned:
        # The new run has not read the cursor yet: it starts from the one the abandoned runs
        # just earned, so what they finished is not delivered again.
        with store.begin() as conn:
            cursor = run_sql.integration_cursor(conn, integration_id)
            store.transition_run(conn, run_id, RunStatus.ENUMERATING, "take the cursor", cursor_before=cursor)
        return StartResult(run_id=run_id, integration=store.get_integration(integration_id))
    # The row read under the lock is the integration this run starts from (its cursor is the run's
    # cursor_before): the caller need not read it again.
    return StartResult(run_id=run_id, integration=store.integration_from_row(row))


def unfinished_runs(store: Store, integration_id: int) -> list[int]:
    """Enumerated runs of the integration that are processing, partial or failed (oldest first)."""
    return run_sql.settleable_runs(store, integration_id, RUN_SETTLEABLE)


def resumable_run(store: Store, integration_id: int, dagster_run_id: str) -> Any:
    """The enumerated sync run of ``integration_id`` that Dagster run ``dagster_run_id`` owns and that is not
    settled for good (processing, partial or failed), or None. A batch step that is retried in the same
    Dagster run, or re-executed from failure (``dagster_run_id`` = the parent run), continues that sync run
    instead of starting another one."""
    return run_sql.resumable_run(store, integration_id, dagster_run_id, RUN_SETTLEABLE)
