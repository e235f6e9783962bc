"""Reconciliation: settle a run from its items, advance the cursor, update health, fire events.

The cursor rule itself is a pure function (``engine.cursor.settle``) over typed records; this
module reads what it needs through ``store.items``/``store.runs``, applies it and writes the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from integrations_dagster.authoring.events import SyncCompleted, SyncItemFailed
from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.cursor import (
    PAGE,
    Counts,
    CursorPolicy,
    InvalidItem,
    ItemCheckpoint,
    Outcome,
    run_status,
    settle,
)
from integrations_dagster.engine.events import fire
from integrations_dagster.engine.health import after_run, counts_toward_health
from integrations_dagster.engine.results import ReconcileResult, display
from integrations_dagster.engine.supersede import supersede_failed
from integrations_dagster.status import UNFINISHED, ItemStatus, RunStatus
from integrations_dagster.store import Store, as_utc
from integrations_dagster.store import items as item_sql
from integrations_dagster.store import runs as run_sql

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from integrations_dagster.engine.engine import SyncEngine

log_default = logging.getLogger("integrations_dagster")

#: ``sync_runs.error`` of a run whose cursor could not be computed (reconcile tries again).
CURSOR_ERROR = "cursor not advanced: "


def is_cursor_error(error: str | None) -> bool:
    return error is not None and error.startswith(CURSOR_ERROR)


class RunRow(Protocol):
    """What the decisions below read of a ``sync_runs`` row (a SQLAlchemy row has these attributes)."""

    @property
    def status(self) -> str: ...
    @property
    def enumerated_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def success_count(self) -> int: ...
    @property
    def failed_count(self) -> int: ...
    @property
    def skipped_count(self) -> int: ...
    @property
    def superseded_count(self) -> int: ...
    @property
    def cursor_after(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


# --- the decisions (pure: tests/test_reconcile_decisions.py) ------------------------------------
def reconcilable(run: RunRow) -> bool:
    """Whether reconcile may settle the run: never one still enumerating, a skipped one, or a
    discarded one (failed before its enumeration finished: it has no items)."""
    if run.status in (RunStatus.ENUMERATING, RunStatus.SKIPPED):
        return False
    return not (run.status == RunStatus.FAILED and run.enumerated_at is None)


def already_settled(run: RunRow, status: str, counts: Mapping[str, int]) -> bool:
    """Nothing moved since the run was settled: same status and counts, and no cursor error to retry.

    Items only leave a settled state by changing the counts (failed -> success/skipped/pending), so
    the same counts mean the same answer: no writes, no events, no re-reading of checkpoints.
    """
    return (
        run.finished_at is not None
        and run.status == status
        and (run.success_count, run.failed_count, run.skipped_count, run.superseded_count)
        == (counts["success"], counts["failed"], counts["skipped"], counts.get("superseded", 0))
        and not is_cursor_error(run.error)  # a run that failed to compute its cursor tries again
    )


def run_error_after(previous: str | None, cursor_error: str | None) -> str | None:
    """The run's error once settled: a cursor error clears once fixed, a new one replaces it; any
    other error (e.g. an enumeration message) stays."""
    if cursor_error:
        return CURSOR_ERROR + cursor_error
    return previous if not is_cursor_error(previous) else None


def settlement_changed(
    run: RunRow, status: str, counts: Mapping[str, int], cursor_after: Any, error: str | None
) -> bool:
    """Whether settling writes anything (and so fires events): any column differs from the row."""
    return not (
        run.status == status
        and run.success_count == counts["success"]
        and run.failed_count == counts["failed"]
        and run.skipped_count == counts["skipped"]
        and run.superseded_count == counts.get("superseded", 0)
        and run.cursor_after == cursor_after
        and run.finished_at is not None
        and run.error == error
    )


def apply_health(engine: SyncEngine, conn: Connection, integration_id: int, status: str, auth: bool,
                 now: datetime, trigger: str | None = None) -> None:
    """Write the health and next sync time ``engine.health.after_run`` derives for a run's end."""
    row = run_sql.integration_row(conn, integration_id)
    if row is None:
        return
    values = health_values(engine, row, status, auth, now, trigger)
    if values:
        run_sql.update_integration_row(conn, integration_id, values)


def health_values(engine: SyncEngine, row: Any, status: str, auth: bool, now: datetime,
                  trigger: str | None = None) -> dict[str, Any]:
    """The integration columns ``engine.health.after_run`` derives for a run's end (``updated_at``
    included), from the integration's ``row`` as it stood (``after_run`` reads neither its cursor nor
    its ``updated_at``); empty when nothing is to be written."""
    provider = engine.providers.get(row.provider_key)
    values = after_run(
        integration=row,
        run_status=status,
        auth_failure=auth,
        now=now,
        default_interval=provider.default_sync_interval if provider else None,
        policy=engine.health,
        keep_claim=trigger == "schedule" and engine.settings.schedule_from == "due",
    )
    if values:
        values["updated_at"] = now
    return values


def try_reconcile(
    engine: SyncEngine, store: Store, run_id: int, *, log: Any = log_default, after_chunk: int | None = None
) -> ReconcileResult | None:
    """Reconcile only if no item of the run is pending or processing (indexed probes first).

    Chunk steps call this as they end (``after_chunk`` = their chunk): all but the last find
    unfinished items at once and skip the locking and counting that a full reconcile does.
    The first probe looks at the next chunk only (usually not yet run, so its first index
    entry answers); only if that one is finished does the probe cover the whole run, whose
    index holds one dead entry per item that has finished.
    """
    if item_sql.has_unfinished(store, run_id, after_chunk=after_chunk):
        return None
    return reconcile(engine, store, run_id, log=log)


def reconcile(engine: SyncEngine, store: Store, run_id: int, *, log: Any = log_default) -> ReconcileResult:
    """Settle a run from its items. Safe to call at any time, any number of times.

    While any item is pending or processing nothing changes. Once all are finished: the run's
    status and counts are written, the cursor advances (see ``next_cursor``), health and the
    next sync time are updated, and events fire, only when something actually changed.
    """
    now = engine.clock()
    to_notify: list[dict[str, Any]] = []
    others: list[int] = []  # other runs whose failed items this run's successes superseded
    with store.begin() as conn:
        run, integ = run_sql.lock_run_and_integration(store, conn, run_id)  # one statement, both locked
        if run is None:
            raise LookupError(f"sync run {run_id} not found")
        if integ is None:
            raise LookupError(f"integration {run.integration_id} of sync run {run_id} not found")
        provider = engine.provider(integ.provider_key)
        counts = with_pruned(store.item_counts(conn, run_id), run.pruned_counts)
        unfinished = counts[ItemStatus.PENDING] + counts[ItemStatus.PROCESSING]
        if not unfinished and reconcilable(run):
            # Failed items (of this run or older ones) whose later version has succeeded are moot:
            # superseded, they hold no cursor and are never retried (engine.supersede).
            changed_runs = supersede_failed(conn, integ.id, now)
            if changed_runs:
                counts = with_pruned(store.item_counts(conn, run_id), run.pruned_counts)
                others = [r for r in changed_runs if r != run_id]
        total = sum(counts.values())
        base: dict[str, Any] = dict(
            run_id=run_id,
            integration_id=integ.id,
            provider_key=integ.provider_key,
            cursor_before=run.cursor_before,
            total=total,
            succeeded=counts["success"],
            failed=counts["failed"],
            skipped=counts["skipped"],
            superseded=counts.get("superseded", 0),
            pending=unfinished,
            request_count=run.request_count,
            direction=getattr(run, "direction", None),
            push_summary=getattr(run, "push_summary", None),
        )
        if not reconcilable(run):
            return ReconcileResult(final=run.status != RunStatus.ENUMERATING, changed=False, status=run.status,
                                   cursor_after=run.cursor_after, **base)
        if unfinished:
            if run.status != RunStatus.PROCESSING:
                store.transition_run(conn, run_id, run.status, "reopen", status=RunStatus.PROCESSING,
                                     finished_at=None)
            return ReconcileResult(final=False, changed=False, status=RunStatus.PROCESSING,
                                   cursor_after=None, **base)
        status = run_status(Counts.of(counts))
        # (A run settled before migration 0015_run_summary has no kept checkpoints: settled once
        # more, it records them, so that prune may delete its rows.)
        if already_settled(run, status, counts) and (run.kept_checkpoints is not None or status == RunStatus.SUCCESS):
            # Nothing moved since this run was settled (items only leave a settled state by
            # changing the counts: failed -> success/skipped/pending): same answer, no writes,
            # no events, and no re-reading of every checkpoint.
            return ReconcileResult(final=True, changed=False, status=status, cursor_after=run.cursor_after,
                                   duration_seconds=(as_utc(run.finished_at) - as_utc(run.started_at))
                                   .total_seconds(), **base)
        # The cursor rule is a pure function (cursor.settle); it never raises on data: items whose
        # checkpoint cannot be ordered fail here, a reducer that raises fails the run.
        outcome = settle_run(engine, conn, provider, run_id, counts, integ.cursor, kept=run.kept_checkpoints)
        status, cursor_after = outcome.status, outcome.cursor
        if outcome.invalid:
            fail_invalid_checkpoints(conn, run_id, outcome.invalid, now, log)
            counts = {**counts, "success": outcome.counts.success, "failed": outcome.counts.failed}
            base.update(succeeded=counts["success"], failed=counts["failed"])
        run_error = run_error_after(run.error, outcome.error)
        changed = settlement_changed(run, status, counts, cursor_after, run_error)
        finished_at = as_utc(run.finished_at) if not changed and run.finished_at else now
        duration = (finished_at - as_utc(run.started_at)).total_seconds()
        counts_health = (run.status != status or run.finished_at is None) and counts_toward_health(
            counted=bool(run.health_counted), status=status,
            newer_run=bool(run.health_counted) and run_sql.has_newer_run(conn, integ.id, run_id))
        if changed:
            store.transition_run(
                conn, run_id, run.status, "be settled",
                status=status,
                items_total=total,
                success_count=counts["success"],
                failed_count=counts["failed"],
                skipped_count=counts["skipped"],
                superseded_count=counts.get("superseded", 0),
                health_counted=run.health_counted or counts_health,
                cursor_after=cursor_after,
                finished_at=finished_at,
                error=run_error,
                kept_checkpoints=outcome.kept,
            )
            # The cursor and the health in one write: the row is locked since the start of this
            # transaction, so ``integ`` is what health_values must read.
            row_values: dict[str, Any] = {}
            if cursor_after != integ.cursor:
                row_values.update(cursor=cursor_after, updated_at=now)
            if counts_health:
                row_values.update(health_values(engine, integ, status, bool(run.auth_failure), now, run.trigger))
            if row_values:
                run_sql.update_integration_row(conn, integ.id, row_values)
            if counts["failed"]:
                to_notify = item_sql.take_unnotified_failures(store, conn, run_id)
        elif run.kept_checkpoints is None and outcome.kept is not None:
            run_sql.record_kept_checkpoints(conn, run_id, outcome.kept)  # nothing else changed: no events
    result = ReconcileResult(final=True, changed=changed, status=status, cursor_after=cursor_after,
                             duration_seconds=duration, **base)
    if changed and run.request_count:
        result.request_ids = run_sql.request_ids(store, run_id)
    if changed:
        log.info(
            f"sync run {run_id}: {status}; {counts['success']} succeeded, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts.get('superseded', 0)} superseded; "
            f"cursor {display(integ.cursor)} -> {display(cursor_after)}"
        )
        for item in to_notify:
            fire(engine.listeners,
                 SyncItemFailed(integration_id=integ.id, provider_key=integ.provider_key, sync_run_id=run_id,
                                item_id=item["id"], external_id=item["external_id"], attempts=item["attempts"],
                                error=item["last_error"]), log, store)
        if status == RunStatus.SUCCESS:
            fire(engine.listeners,
                 SyncCompleted(integration_id=integ.id, provider_key=integ.provider_key, sync_run_id=run_id,
                               cursor_before=run.cursor_before, cursor_after=cursor_after, total=total,
                               succeeded=counts["success"], skipped=counts["skipped"]), log, store)
    for other in others:  # their failed items were superseded: settle them again (counts, status)
        reconcile(engine, store, other, log=log)
    return result


def with_pruned(counts: dict[str, int], pruned: Mapping[str, int] | None) -> dict[str, int]:
    """A run's item counts: its rows by status plus the rows ``integrations prune`` deleted."""
    if not pruned:
        return counts
    out = dict(counts)
    for status, n in pruned.items():
        out[status] = out.get(status, 0) + int(n)
    return out


def cursor_policy(engine: SyncEngine, provider: Provider) -> CursorPolicy:
    default = type(provider).reduce_checkpoints is Provider.reduce_checkpoints
    return CursorPolicy(rule=engine.settings.cursor_rule, ordered=provider.has_ordered_checkpoints(),
                        reduce=None if default else provider.reduce_checkpoints)


def settle_run(
    engine: SyncEngine, conn: Connection, provider: Provider, run_id: int, counts: dict[str, int], old: Any,
    *, kept: list[Any] | None = None,
) -> Outcome:
    """Read what the cursor rule needs and apply it (``cursor.settle``); never raises on data.

    Held (failed) items are read whole; completed checkpoints are streamed in id order. With the
    default reducer on PostgreSQL, when every checkpoint is a JSON string whose text order is its
    order (plain strings, or ISO-8601 timestamps all in one ``...Z`` shape), the database computes
    the maximum itself (``store.items.max_string_checkpoint``) and only that value reaches ``settle``.

    ``kept``: the run's ``kept_checkpoints`` from its last settlement (what pruned rows told),
    handed to ``settle`` as completed items before the rows (as ``skipped``: never failed again).
    A run with failures reads every completed checkpoint, to keep what a later reconcile needs.
    """
    policy = cursor_policy(engine, provider)
    c = Counts.of(counts)
    if c.unfinished:
        return settle(c, [], [], old_cursor=old, policy=policy)
    held: list[ItemCheckpoint] = []
    if c.failed:
        held = [ItemCheckpoint(i, st, cp, ext) for i, st, cp, ext in item_sql.held_checkpoints(conn, run_id)]
    summary = [ItemCheckpoint(0, ItemStatus.SKIPPED, cp) for cp in (kept or ()) if cp is not None]
    if (
        conn.dialect.name == "postgresql"
        and policy.reduce is None
        and not held
        and (old is None or isinstance(old, str))
        and all(isinstance(k.checkpoint, str) for k in summary)
    ):
        found, top = item_sql.max_string_checkpoint(conn, run_id, None)
        if found:
            top_items = [ItemCheckpoint(0, ItemStatus.SUCCESS, top)] if top is not None else []
            return settle(c, held, summary + top_items, old_cursor=old, policy=policy)

    def completed() -> Iterator[ItemCheckpoint]:
        yield from summary
        for i, st, cp in item_sql.completed_checkpoints(conn, run_id, PAGE):
            yield ItemCheckpoint(i, st, cp)

    return settle(c, held, completed(), old_cursor=old, policy=policy)


def next_cursor(engine: SyncEngine, conn: Connection, provider: Provider, run_id: int, *, has_failures: bool) -> Any:
    """The cursor a finished run earns before the monotonic guard (``settle``'s candidate).

    - No failures: the reduction of every completed item's checkpoint.
    - Failures, ``cursor_rule="strict"`` or a structured cursor: None (the cursor stays).
    - Failures, ordered checkpoints: the low-water mark, i.e. the reduction of completed
      checkpoints strictly below the smallest checkpoint of any failed item.
    """
    counts = item_sql.status_counts(conn, run_id)
    for st in UNFINISHED:
        counts.pop(st, None)
    if has_failures and not counts.get("failed"):
        counts["failed"] = 1
    return settle_run(engine, conn, provider, run_id, counts, None).candidate


def fail_invalid_checkpoints(
    conn: Connection, run_id: int, invalid: tuple[InvalidItem, ...], now: datetime, log: Any
) -> None:
    """Fail completed items whose checkpoint cannot be ordered (they then hold the cursor)."""
    item_sql.fail_items(conn, [(i.item_id, i.message) for i in invalid], now)
    log.warning(f"sync run {run_id}: {len(invalid)} items failed: {invalid[0].message}")
