"""SQL over ``sync_runs`` (and the ``integrations`` row a run locks): what the engine's run
lifecycle needs. Every function takes a connection inside the caller's transaction, so the engine
decides what belongs in one transaction and the store says how to read and write it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from integrations_dagster.status import RUN_IN_FLIGHT, UNFINISHED, ItemStatus, RunStatus
from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store

# The statements of a small sync's hot path are built once (bound parameters ``b_*``): SQLAlchemy then
# computes each one's cache key once, not per call (docs/BENCHMARKS.md, "Fleet").
_LOCK_INTEGRATION = select(m.integrations).where(m.integrations.c.id == bindparam("b_id"))
_LOCK_INTEGRATION_FOR_UPDATE = _LOCK_INTEGRATION.with_for_update()
_IN_FLIGHT = (select(m.sync_runs).where(m.sync_runs.c.integration_id == bindparam("b_id"))
              .where(m.sync_runs.c.status.in_(RUN_IN_FLIGHT)))
_CLAIMABLE = (select(m.sync_runs.c.status, m.sync_runs.c.enumerated_at, m.sync_runs.c.integration_id,
                     m.sync_runs.c.chunks)
              .where(m.sync_runs.c.id == bindparam("b_id")))
_CLAIMABLE_FOR_UPDATE = _CLAIMABLE.with_for_update()
_RUN_AND_INTEGRATION = (
    select(*[c.label(f"r_{c.name}") for c in m.sync_runs.c], *[c.label(f"i_{c.name}") for c in m.integrations.c])
    .select_from(m.sync_runs.join(m.integrations, m.integrations.c.id == m.sync_runs.c.integration_id))
    .where(m.sync_runs.c.id == bindparam("b_id"))
)
_RUN_AND_INTEGRATION_FOR_UPDATE = _RUN_AND_INTEGRATION.with_for_update()


def lock_integration(store: Store, conn: Connection, integration_id: int) -> Any:
    """The integration's row, locked for the transaction (``FOR UPDATE``; SQLite's write lock)."""
    stmt = _LOCK_INTEGRATION if store.is_sqlite else _LOCK_INTEGRATION_FOR_UPDATE
    return conn.execute(stmt, {"b_id": int(integration_id)}).first()


def lock_run(store: Store, conn: Connection, run_id: int) -> Any:
    return conn.execute(store.for_update(select(m.sync_runs).where(m.sync_runs.c.id == run_id))).first()


def lock_run_and_integration(store: Store, conn: Connection, run_id: int) -> tuple[Any, Any]:
    """(the run's row, its integration's row), both locked for the transaction, in one statement
    (``FOR UPDATE`` over the join locks the run's row and the integration's, as ``lock_run`` and
    ``lock_integration`` one after the other did); (None, None) without the run, (run, None) without
    its integration."""
    sr, it = m.sync_runs, m.integrations
    stmt = _RUN_AND_INTEGRATION if store.is_sqlite else _RUN_AND_INTEGRATION_FOR_UPDATE
    row = conn.execute(stmt, {"b_id": int(run_id)}).first()
    if row is None:  # no run, or (never in practice: a foreign key) a run without its integration
        return lock_run(store, conn, run_id), None
    data = row._mapping
    return (_Record({c.name: data[f"r_{c.name}"] for c in sr.c}),
            _Record({c.name: data[f"i_{c.name}"] for c in it.c}))


class _Record:
    """A row's columns as attributes (what ``lock_run``'s and ``lock_integration``'s rows offer)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return self._values


def record_kept_checkpoints(conn: Connection, run_id: int, kept: list[Any]) -> None:
    """Record a settled run's kept checkpoints (a run settled before migration 0015_run_summary)."""
    conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == run_id).values(kept_checkpoints=kept))


def in_flight(conn: Connection, integration_id: int) -> list[Any]:
    return list(conn.execute(_IN_FLIGHT, {"b_id": int(integration_id)}).all())


def insert_run(conn: Connection, **values: Any) -> int:
    return int(conn.execute(m.sync_runs.insert().values(**values).returning(m.sync_runs.c.id)).scalar_one())


def set_push_summary(conn: Connection, run_id: int, summary: dict[str, int]) -> None:
    conn.execute(update(m.sync_runs).where(m.sync_runs.c.id == run_id).values(push_summary=summary))


def integration_cursor(conn: Connection, integration_id: int) -> Any:
    return conn.execute(select(m.integrations.c.cursor).where(m.integrations.c.id == integration_id)).scalar()


def discard_enumeration(conn: Connection, run_id: int, reason: str, now: datetime) -> bool:
    """enumerating -> failed (compare-and-set), then its dispatched rows go; False if the run was
    no longer enumerating (nothing changed). The session only inserts while the run is enumerating
    (checked under a ``FOR KEY SHARE`` lock, ``Store.run_status``): the row is locked ``FOR UPDATE``
    first, which waits for a batch in flight to commit, so no row comes back after this."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(m.sync_runs.c.id).where(m.sync_runs.c.id == run_id).with_for_update())
    done = conn.execute(
        update(m.sync_runs)
        .where(m.sync_runs.c.id == run_id, m.sync_runs.c.status == RunStatus.ENUMERATING)
        .values(status=RunStatus.FAILED, error=reason, finished_at=now, items_total=0)
    ).rowcount
    if done:
        conn.execute(m.sync_items.delete().where(m.sync_items.c.run_id == run_id))
    return bool(done)


def fail_unfinished(conn: Connection, run_id: int, reason: str, now: datetime) -> int:
    """Fail every pending/processing item of the run (an abandoned run: the cursor holds at them)."""
    return int(conn.execute(
        update(m.sync_items)
        .where(m.sync_items.c.run_id == run_id)
        .where(m.sync_items.c.status.in_(UNFINISHED))
        .values(status=ItemStatus.FAILED, last_error=reason, finished_at=now)
    ).rowcount)


def set_auth_failure(conn: Connection, run_id: int, auth: bool) -> None:
    conn.execute(update(m.sync_runs).where(m.sync_runs.c.id == run_id).values(auth_failure=auth))


def integration_row(conn: Connection, integration_id: int) -> Any:
    return conn.execute(select(m.integrations).where(m.integrations.c.id == integration_id)).first()


def update_integration_row(conn: Connection, integration_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(m.integrations).where(m.integrations.c.id == integration_id).values(**values))


def claimable_run(store: Store, conn: Connection, run_id: int) -> Any:
    """(status, enumerated_at, integration_id, chunks) of the run, locked: a chunk step checks it before
    claiming items."""
    stmt = _CLAIMABLE if store.is_sqlite else _CLAIMABLE_FOR_UPDATE
    return conn.execute(stmt, {"b_id": int(run_id)}).first()


def request_ids(store: Store, run_id: int, limit: int = 200) -> list[int]:
    with store.engine.connect() as conn:
        return [int(i) for i in conn.execute(
            select(m.requests_log.c.id).where(m.requests_log.c.sync_run_id == run_id)
            .order_by(m.requests_log.c.id).limit(limit)).scalars()]


def settleable_runs(store: Store, integration_id: int, statuses: Sequence[str]) -> list[int]:
    """Enumerated runs of the integration in ``statuses``, oldest first."""
    with store.engine.connect() as conn:
        return [int(i) for i in conn.execute(
            select(m.sync_runs.c.id)
            .where(m.sync_runs.c.integration_id == integration_id)
            .where(m.sync_runs.c.status.in_(tuple(statuses)))
            .where(m.sync_runs.c.enumerated_at.is_not(None))
            .order_by(m.sync_runs.c.id)
        ).scalars()]


def last_enumerated_sizes(conn: Connection, integration_ids: Sequence[int]) -> dict[int, int]:
    """``{integration id: items_total}`` of each integration's latest enumerated sync run (one query);
    integrations that never had one are absent (their first sync)."""
    if not integration_ids:
        return {}
    sr = m.sync_runs
    latest = (
        select(func.max(sr.c.id).label("id"))
        .where(sr.c.integration_id.in_(list(integration_ids)), sr.c.enumerated_at.is_not(None))
        .group_by(sr.c.integration_id)
        .subquery()
    )
    rows = conn.execute(select(sr.c.integration_id, sr.c.items_total).join(latest, sr.c.id == latest.c.id))
    return {int(r.integration_id): int(r.items_total) for r in rows}


def resumable_run(store: Store, integration_id: int, dagster_run_id: str, statuses: Sequence[str]) -> Any:
    """The latest enumerated sync run of the integration that Dagster run ``dagster_run_id`` owns and that
    is in ``statuses`` (id, chunks, status), or None: what a retried or re-executed batch step resumes."""
    sr = m.sync_runs
    with store.engine.connect() as conn:
        return conn.execute(
            select(sr.c.id, sr.c.chunks, sr.c.status)
            .where(sr.c.integration_id == integration_id, sr.c.dagster_run_id == dagster_run_id)
            .where(sr.c.enumerated_at.is_not(None), sr.c.status.in_(tuple(statuses)))
            .order_by(sr.c.id.desc())
            .limit(1)
        ).first()


def has_newer_run(conn: Connection, integration_id: int, run_id: int) -> bool:
    """Whether the integration has a run after ``run_id`` that ran (not ``skipped``)."""
    return conn.execute(
        select(m.sync_runs.c.id)
        .where(m.sync_runs.c.integration_id == integration_id, m.sync_runs.c.id > run_id,
               m.sync_runs.c.status != RunStatus.SKIPPED)
        .limit(1)
    ).first() is not None


def latest_owned_runs(store: Store, integration_ids: Sequence[int], dagster_run_ids: Sequence[str]) -> dict[int, Any]:
    """``{integration id: row}`` of each integration's latest sync run (id, status, enumerated_at, chunks,
    dagster_run_id) made under one of ``dagster_run_ids`` (a run and its ancestors), in one query; the ones
    without such a run are absent."""
    if not integration_ids or not dagster_run_ids:
        return {}
    sr = m.sync_runs
    latest = (
        select(func.max(sr.c.id).label("id"))
        .where(sr.c.integration_id.in_(list(integration_ids)), sr.c.dagster_run_id.in_(list(dagster_run_ids)))
        .group_by(sr.c.integration_id)
        .subquery()
    )
    with store.engine.connect() as conn:
        rows = conn.execute(select(sr.c.id, sr.c.integration_id, sr.c.status, sr.c.enumerated_at, sr.c.chunks,
                                   sr.c.dagster_run_id).join(latest, sr.c.id == latest.c.id)).all()
    return {int(r.integration_id): r for r in rows}
