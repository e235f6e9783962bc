"""SQL behind the operator actions (``operations.actions``): status, skip/retry, reclaiming stuck
items, prune, the timeline's request log, credential rotation. The actions decide; this reads
and writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, func, or_, select, update

from integrations_dagster.status import UNFINISHED, ItemStatus, RunStatus
from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store, chunked

_i, _r, _t, _q = m.integrations, m.sync_runs, m.sync_items, m.requests_log


def _tenant_ids(tenant: str) -> Any:
    return select(_i.c.id).where(_i.c.tenant == tenant)


# --- integrations ------------------------------------------------------------------------------
def credential_flags(store: Store, ids: Sequence[int]) -> dict[int, bool]:
    """Whether each integration has credentials stored (never their values)."""
    out: dict[int, bool] = {}
    with store.engine.connect() as conn:
        for part in chunked(ids, 1000):
            for iid, has in conn.execute(select(_i.c.id, _i.c.credentials.is_not(None)).where(_i.c.id.in_(part))):
                out[int(iid)] = bool(has)
    return out


def cursor_of(store: Store, integration_id: int) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(_i.c.cursor).where(_i.c.id == integration_id)).scalar()


def status_rows(store: Store, *, integration_id: int | None = None, tenant: str | None = None) -> list[Any]:
    """One row per integration with its latest run, its pending/failed item counts and its outbox
    counts (one query)."""
    items = (
        select(
            _t.c.integration_id.label("iid"),
            func.sum(case((_t.c.status.in_(UNFINISHED), 1), else_=0)).label("pending"),
            func.sum(case((_t.c.status == ItemStatus.FAILED, 1), else_=0)).label("failed"),
            func.sum(case((_t.c.status == ItemStatus.SUPERSEDED, 1), else_=0)).label("superseded"),
        )
        .where(_t.c.status.in_((*UNFINISHED, ItemStatus.FAILED, ItemStatus.SUPERSEDED)))
        .group_by(_t.c.integration_id)
        .subquery("item_counts")
    )
    _o = m.outbox
    box = (  # issue 13: the outbox's pending / failed / conflict mutations, in the same statement
        select(
            _o.c.integration_id.label("iid"),
            func.sum(case((_o.c.status == "pending", 1), else_=0)).label("pending"),
            func.sum(case((_o.c.status == "failed", 1), else_=0)).label("failed"),
            func.sum(case((_o.c.status == "conflict", 1), else_=0)).label("conflict"),
        )
        .where(_o.c.status.in_(("pending", "failed", "conflict")))
        .group_by(_o.c.integration_id)
        .subquery("outbox_counts")
    )
    latest = select(_r.c.integration_id.label("iid"), func.max(_r.c.id).label("run_id")).group_by(
        _r.c.integration_id
    ).subquery("latest_run")
    last = _r.alias("last_run")
    stmt = (
        select(
            _i.c.id, _i.c.tenant, _i.c.provider_key, _i.c.name, _i.c.enabled, _i.c.health, _i.c.cursor,
            _i.c.last_synced_at, _i.c.next_sync_at,
            last.c.id.label("last_run_id"), last.c.status.label("last_run_status"),
            last.c.dagster_run_id.label("last_dagster_run_id"),
            func.coalesce(items.c.pending, 0).label("pending"),
            func.coalesce(items.c.failed, 0).label("failed"),
            func.coalesce(items.c.superseded, 0).label("superseded"),
            func.coalesce(box.c.pending, 0).label("outbox_pending"),
            func.coalesce(box.c.failed, 0).label("outbox_failed"),
            func.coalesce(box.c.conflict, 0).label("outbox_conflict"),
        )
        .select_from(
            _i.outerjoin(items, items.c.iid == _i.c.id)
            .outerjoin(box, box.c.iid == _i.c.id)
            .outerjoin(latest, latest.c.iid == _i.c.id)
            .outerjoin(last, last.c.id == latest.c.run_id)
        )
        .order_by(_i.c.id)
    )
    if integration_id is not None:
        stmt = stmt.where(_i.c.id == integration_id)
    if tenant is not None:
        stmt = stmt.where(_i.c.tenant == tenant)
    with store.engine.connect() as conn:
        return list(conn.execute(stmt).all())


# --- skip and retry ----------------------------------------------------------------------------
def skip_failed_item(store: Store, item_id: int, reason: str, now: datetime) -> bool:
    """failed -> skipped (compare-and-set); False when the item was no longer failed."""
    with store.begin() as conn:
        return bool(conn.execute(
            update(_t).where(_t.c.id == item_id, _t.c.status == ItemStatus.FAILED)
            .values(status=ItemStatus.SKIPPED, skip_reason=reason[:4000], finished_at=now, next_attempt_at=None)
        ).rowcount)


def claim_failed(store: Store, ids: Sequence[int], now: datetime) -> set[int]:
    """failed -> processing with fresh attempts, in one statement; the ids that were still failed."""
    with store.begin() as conn:
        return {int(i) for i in conn.execute(
            update(_t).where(store.id_in(_t.c.id, list(ids)), _t.c.status == ItemStatus.FAILED)
            .values(status=ItemStatus.PROCESSING, claimed_at=now, attempts=0, deferrals=0, first_attempt_at=now,
                    next_attempt_at=None, finished_at=None, failure_notified=False)
            .returning(_t.c.id)
        ).scalars()}


def item_states(store: Store, ids: Sequence[int]) -> list[tuple[int, str, str | None]]:
    """(id, status, last_error) of the items."""
    out: list[tuple[int, str, str | None]] = []
    with store.engine.connect() as conn:
        for part in chunked(ids, 1000):
            out.extend((int(i), st, err) for i, st, err in conn.execute(
                select(_t.c.id, _t.c.status, _t.c.last_error).where(store.id_in(_t.c.id, part))))
    return out


def finish_claimed(store: Store, outcomes: Sequence[tuple[int, str, str | None]], now: datetime) -> None:
    """(id, status, last_error) for items an operator retry claimed (still processing), one statement."""
    with store.begin() as conn:
        conn.execute(
            update(_t)
            .where(_t.c.id == bindparam("b_id"), _t.c.status == ItemStatus.PROCESSING)
            .values(status=bindparam("b_status"), last_error=bindparam("b_error"), attempts=1, finished_at=now,
                    next_attempt_at=None),
            [{"b_id": i, "b_status": st, "b_error": err} for i, st, err in outcomes],
        )


# --- reclaiming stuck work ---------------------------------------------------------------------
def _fail_ids(conn: Connection, ids: Sequence[int], still: Sequence[str], now: datetime, message: str) -> None:
    for part in chunked(ids, 1000):
        conn.execute(
            update(_t).where(_t.c.id.in_(part), _t.c.status.in_(tuple(still)))
            .values(status=ItemStatus.FAILED, finished_at=now, next_attempt_at=None, failure_notified=False,
                    last_error=message)
        )


def fail_stuck_processing(store: Store, integration_id: int, claimed_before: datetime, now: datetime,
                          message: str) -> list[int]:
    """Fail the integration's items claimed (``processing``) before ``claimed_before``; their ids."""
    with store.begin() as conn:
        stuck = [int(i) for i in conn.execute(
            select(_t.c.id).where(_t.c.integration_id == integration_id, _t.c.status == ItemStatus.PROCESSING,
                                  _t.c.claimed_at < claimed_before).order_by(_t.c.id)
        ).scalars()]
        _fail_ids(conn, stuck, (ItemStatus.PROCESSING,), now, message)
    return stuck


def processing_runs(store: Store, integration_id: int) -> list[Any]:
    """(id, dagster_run_id, owner_host, owner_pid) of the integration's processing runs that have a
    Dagster run."""
    with store.engine.connect() as conn:
        return list(conn.execute(
            select(_r.c.id, _r.c.dagster_run_id, _r.c.owner_host, _r.c.owner_pid)
            .where(_r.c.integration_id == integration_id, _r.c.status == RunStatus.PROCESSING,
                   _r.c.dagster_run_id.is_not(None))
        ).all())


def fail_unfinished_of_runs(store: Store, run_ids: Sequence[int], now: datetime, message: str) -> list[int]:
    """Fail every pending/processing item of the runs; their ids."""
    with store.begin() as conn:
        ids = [int(i) for i in conn.execute(
            select(_t.c.id).where(_t.c.run_id.in_(list(run_ids)), _t.c.status.in_(UNFINISHED))
        ).scalars()]
        _fail_ids(conn, ids, UNFINISHED, now, message)
    return ids


# --- prune -------------------------------------------------------------------------------------
def _delete_in_batches(store: Store, table: Any, where: list[Any], size: int, report: Callable[[int], None]) -> int:
    total = 0
    while True:
        with store.begin() as conn:
            ids = list(conn.execute(select(table.c.id).where(*where).order_by(table.c.id).limit(size)).scalars())
            if not ids:
                break
            total += conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount
        report(total)
        if len(ids) < size:
            break
    return total


def prune_items(store: Store, cutoff: datetime, *, tenant: str | None, batch_size: int,
                report: Callable[[int], None]) -> int:
    """Delete success/skipped/superseded item rows finished before ``cutoff`` (failed rows stay), and add them
    to their run's ``pruned_counts``, in the same transaction: a run's counts survive pruning.

    Only rows a later reconcile can do without: of runs settled (success, partial, failed) whose
    ``kept_checkpoints`` reconcile recorded (or that succeeded outright: nothing of them is needed
    again), and finished before the run was last settled (what ``kept_checkpoints`` covers). The
    rest stays until a reconcile records them (runs settled before migration 0015_run_summary).
    """
    settled = select(_r.c.id).where(
        _r.c.id == _t.c.run_id,
        _r.c.finished_at.is_not(None),
        _r.c.status.in_((RunStatus.SUCCESS, RunStatus.PARTIAL, RunStatus.FAILED)),
        or_(_r.c.kept_checkpoints.is_not(None), _r.c.status == RunStatus.SUCCESS),
        func.coalesce(_t.c.finished_at, _t.c.created_at) <= _r.c.finished_at,
    ).exists()
    where = [_t.c.status.in_((ItemStatus.SUCCESS, ItemStatus.SKIPPED, ItemStatus.SUPERSEDED)),
             func.coalesce(_t.c.finished_at, _t.c.created_at) < cutoff, settled]
    if tenant is not None:
        where.append(_t.c.integration_id.in_(_tenant_ids(tenant)))
    total = 0
    while True:
        with store.begin() as conn:
            rows = conn.execute(select(_t.c.id, _t.c.run_id, _t.c.status).where(*where)
                                .order_by(_t.c.id).limit(batch_size)).all()
            if not rows:
                break
            by_run: dict[int, dict[str, int]] = {}
            for _id, run_id, status in rows:
                counts = by_run.setdefault(int(run_id), {})
                counts[str(status)] = counts.get(str(status), 0) + 1
            # The runs first (their rows locked, as reconcile locks them), then the items.
            for run_id, pruned in sorted(by_run.items()):
                before = conn.execute(store.for_update(select(_r.c.pruned_counts).where(_r.c.id == run_id))).scalar()
                merged = dict(before or {})
                for status, n in pruned.items():
                    merged[status] = int(merged.get(status, 0)) + n
                conn.execute(update(_r).where(_r.c.id == run_id).values(pruned_counts=merged))
            ids = [int(r.id) for r in rows]
            for part in chunked(ids, 1000):
                total += conn.execute(delete(_t).where(_t.c.id.in_(part))).rowcount
        report(total)
        if len(rows) < batch_size:
            break
    return total


def prune_requests(store: Store, cutoff: datetime, *, tenant: str | None, batch_size: int,
                   report: Callable[[int], None]) -> int:
    """Delete request-log rows logged before ``cutoff``."""
    where = [_q.c.created_at < cutoff]
    if tenant is not None:
        where.append(_q.c.integration_id.in_(_tenant_ids(tenant)))
    return _delete_in_batches(store, _q, where, batch_size, report)


# --- timeline ----------------------------------------------------------------------------------
def requests_of_runs(store: Store, run_ids: Sequence[int]) -> list[Any]:
    """Request-log rows of the runs, oldest first."""
    out: list[Any] = []
    with store.engine.connect() as conn:
        for ids in chunked(list(run_ids), 1000):
            out.extend(conn.execute(select(_q).where(_q.c.sync_run_id.in_(ids)).order_by(_q.c.id)))
    return out


# --- credentials -------------------------------------------------------------------------------
def rewrite_credentials(
    store: Store,
    transform: Callable[[list[tuple[int, str]]], list[tuple[int, str | None]]],
    *,
    tenant: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[int, int]:
    """In one transaction: read every stored credential token, ``transform`` them all (it may raise:
    then nothing is written), write the new tokens. (rewritten, total)."""
    stmt = select(_i.c.id, _i.c.credentials).where(_i.c.credentials.is_not(None)).order_by(_i.c.id)
    if tenant is not None:
        stmt = stmt.where(_i.c.tenant == tenant)
    with store.begin() as conn:
        rows = [(int(r.id), r.credentials) for r in conn.execute(stmt).all()]
        new = transform(rows)
        for n, (iid, value) in enumerate(new, 1):
            conn.execute(update(_i).where(_i.c.id == iid).values(credentials=value))
            if n % 500 == 0:
                progress(f"re-encrypted {n}/{len(new)}")
    return len(new), len(rows)
