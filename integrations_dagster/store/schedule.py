"""SQL of the sync and push sensors: what one tick reads, and the claim it writes.

The sensors (``orchestration/sensors.py``, ``orchestration/push_sensor.py``) decide; these functions
say how to read and write, and hand back typed records rather than SQLAlchemy rows. A sync tick's
reads (``read_sync_tick``) run on one connection: the provider's integration ids, one page of due
integrations, optionally the last enumerated sizes (batching), and the in-flight sync runs of the due
ones; ``claim_due`` is the tick's one write. The query count stays constant whatever the number of
integrations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, bindparam, or_, select, update

from integrations_dagster.engine.health import DISABLED
from integrations_dagster.status import RUN_IN_FLIGHT
from integrations_dagster.store import models as m
from integrations_dagster.store.runs import last_enumerated_sizes
from integrations_dagster.store.store import Store, as_utc


@dataclass(frozen=True, slots=True)
class DueRow:
    """A due integration as the sync sensor sees it (``next_sync_at`` in UTC)."""

    id: int
    next_sync_at: datetime
    sync_interval_minutes: int | None
    sync_cron: str | None
    health: str


@dataclass(frozen=True, slots=True)
class InFlightRun:
    """A sync run in ``enumerating``/``processing`` (``started_at`` in UTC)."""

    id: int
    integration_id: int
    status: str
    dagster_run_id: str | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class SyncTickRows:
    """What one sync-sensor tick read from our database."""

    #: every integration id of the provider (the partitions it should have)
    integration_ids: set[int]
    #: one page of due integrations in ``(next_sync_at, id)`` order
    due: list[DueRow]
    #: integration id -> items of its latest enumerated run (only when asked for; first syncs absent)
    last_sizes: dict[int, int] = field(default_factory=dict)
    #: integration id -> its oldest in-flight sync run (due integrations only)
    in_flight: dict[int, InFlightRun] = field(default_factory=dict)


def read_sync_tick(
    store: Store,
    provider_key: str,
    *,
    now: datetime,
    limit: int,
    after: tuple[datetime, int] | None = None,
    scheduled_only: bool = False,
    with_sizes: bool = False,
) -> SyncTickRows:
    """The reads of one sync-sensor tick (3 queries, 4 ``with_sizes``).

    Due means: of ``provider_key``, enabled, not disabled by health, ``next_sync_at <= now``; at most
    ``limit``, after ``after`` (``(next_sync_at, id)``) when given. ``scheduled_only``: only integrations
    with their own interval or cron (the provider has no default interval).
    """
    with store.engine.connect() as conn:
        ids = {int(x) for x in conn.execute(
            select(m.integrations.c.id).where(m.integrations.c.provider_key == provider_key)).scalars()}
        due = [_due_row(r) for r in conn.execute(
            _due_query(provider_key, now=now, limit=limit, after=after, scheduled_only=scheduled_only))]
        due_ids = [d.id for d in due]
        sizes = last_enumerated_sizes(conn, due_ids) if with_sizes and due_ids else {}
        runs = in_flight_runs(conn, due_ids)
    return SyncTickRows(integration_ids=ids, due=due, last_sizes=sizes, in_flight=runs)


def in_flight_runs(conn: Connection, integration_ids: Sequence[int]) -> dict[int, InFlightRun]:
    """integration id -> its oldest sync run still ``enumerating``/``processing`` (one query; none for
    no ids)."""
    if not integration_ids:
        return {}
    sr = m.sync_runs
    out: dict[int, InFlightRun] = {}
    for r in conn.execute(
        select(sr.c.id, sr.c.integration_id, sr.c.status, sr.c.dagster_run_id, sr.c.started_at)
        .where(sr.c.integration_id.in_(list(integration_ids)), sr.c.status.in_(RUN_IN_FLIGHT))
        .order_by(sr.c.id)
    ):
        run = InFlightRun(
            id=int(r.id), integration_id=int(r.integration_id), status=str(r.status),
            dagster_run_id=None if r.dagster_run_id is None else str(r.dagster_run_id),
            started_at=as_utc(r.started_at),
        )
        out.setdefault(run.integration_id, run)
    return out


def in_flight_for(store: Store, integration_ids: Iterable[int]) -> dict[int, InFlightRun]:
    """``in_flight_runs`` on a connection of its own (the push sensor's one query)."""
    ids = list(integration_ids)
    if not ids:
        return {}
    with store.engine.connect() as conn:
        return in_flight_runs(conn, ids)


def claim_due(store: Store, claims: Sequence[tuple[int, datetime]], *, now: datetime) -> None:
    """Move each claimed integration's ``next_sync_at`` to its claim time (one executemany), but only
    where it is still due at ``now``: a reconcile that set a fresh time meanwhile is never clobbered."""
    if not claims:
        return
    i = m.integrations
    with store.begin() as conn:
        conn.execute(
            update(i)
            .where(i.c.id == bindparam("b_id"), i.c.next_sync_at <= bindparam("b_now"))
            .values(next_sync_at=bindparam("b_claim")),
            [{"b_id": iid, "b_claim": at, "b_now": now} for iid, at in claims],
        )


def _due_query(
    provider_key: str, *, now: datetime, limit: int, after: tuple[datetime, int] | None, scheduled_only: bool
) -> Select[Any]:
    i = m.integrations
    stmt = (
        select(i.c.id, i.c.next_sync_at, i.c.sync_interval_minutes, i.c.sync_cron, i.c.health)
        .where(i.c.provider_key == provider_key, i.c.enabled.is_(True), i.c.next_sync_at <= now)
        .where(i.c.health != DISABLED)
        .order_by(i.c.next_sync_at, i.c.id)
        .limit(limit)
    )
    if scheduled_only:
        # Neither its own interval, nor a cron, nor a provider default: not scheduled.
        stmt = stmt.where(or_(i.c.sync_interval_minutes.is_not(None), i.c.sync_cron.is_not(None)))
    if after is not None:
        at, after_id = after
        stmt = stmt.where(or_(i.c.next_sync_at > at, and_(i.c.next_sync_at == at, i.c.id > after_id)))
    return stmt


def _due_row(r: Row[Any]) -> DueRow:
    return DueRow(
        id=int(r.id), next_sync_at=as_utc(r.next_sync_at),
        sync_interval_minutes=None if r.sync_interval_minutes is None else int(r.sync_interval_minutes),
        sync_cron=r.sync_cron, health=str(r.health),
    )
