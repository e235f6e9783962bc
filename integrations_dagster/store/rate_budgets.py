"""SQL of the shared rate budget (``authoring.context.DbRateBudget``): one ``rate_budgets`` row per
integration and one ``rate_budget_grants`` row per granted request.

Every function takes a connection inside the caller's transaction: the budget decides (window,
leases, what the server said), these say how to read and write. ``lock_budget`` locks the row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write lock), creating it first
when the integration has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store, chunked, utcnow


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """The budget's shared state (epoch seconds)."""

    #: no request before this (a ``Retry-After`` or an exhausted server quota)
    blocked_until: float | None
    #: what the server last said is left (persisted only when it ran low), and when that count resets
    server_remaining: int | None
    server_reset: float | None


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """Columns ``observe`` writes; ``None`` fields are left as they are."""

    blocked_until: float | None = None
    server_remaining: int | None = None
    server_reset: float | None = None
    #: ``server_reset`` is written even when None (the server sent no reset time)
    set_server: bool = False


def lock_budget(store: Store, conn: Connection, integration_id: int, *, limit: int, period_seconds: float,
                now: float) -> BudgetRow:
    """The integration's budget row, locked for the transaction; created (idempotently) if missing."""
    t = m.rate_budgets
    stmt = store.for_update(select(t.c.blocked_until, t.c.server_remaining, t.c.server_reset)
                            .where(t.c.integration_id == integration_id))
    row = conn.execute(stmt).first()
    if row is None:
        values = dict(integration_id=integration_id, limit=limit, period_seconds=period_seconds,
                      window_start=now, used=0, updated_at=utcnow())
        if store.is_sqlite:
            conn.execute(sqlite.insert(t).values(**values).on_conflict_do_nothing())
        else:
            conn.execute(postgresql.insert(t).values(**values).on_conflict_do_nothing())
        row = conn.execute(stmt).first()
    if row is None:  # pragma: no cover - the insert above or a concurrent one created it
        raise RuntimeError(f"rate budget of integration {integration_id} could not be created")
    return _budget(row)


def prune_grants(conn: Connection, integration_id: int, *, until: float) -> None:
    """Delete the integration's grants at or before ``until``."""
    g = m.rate_budget_grants
    conn.execute(delete(g).where(g.c.integration_id == integration_id, g.c.granted_at <= until))


def grants_after(conn: Connection, integration_id: int, since: float) -> int:
    """How many grants the integration got after ``since``."""
    g = m.rate_budget_grants
    return int(conn.execute(
        select(func.count()).select_from(g).where(g.c.integration_id == integration_id, g.c.granted_at > since)
    ).scalar_one())


def grant_time(conn: Connection, integration_id: int, since: float, offset: int) -> float:
    """The time of the ``offset``-th (0-based, oldest first) grant after ``since``."""
    g = m.rate_budget_grants
    return float(conn.execute(
        select(g.c.granted_at)
        .where(g.c.integration_id == integration_id, g.c.granted_at > since)
        .order_by(g.c.granted_at)
        .offset(offset)
        .limit(1)
    ).scalar_one())


def add_grants(conn: Connection, integration_id: int, *, at: float, n: int, spend_server: bool) -> None:
    """Record ``n`` grants at ``at``; ``spend_server``: also count them off the server's remaining quota."""
    # Multi-row INSERTs, not an executemany: a lease of 100 is one statement, not 100 (500 rows a
    # statement keeps SQLite under its bound-parameter limit).
    for part in chunked([{"integration_id": integration_id, "granted_at": at}] * n, 500):
        conn.execute(insert(m.rate_budget_grants).values(part))
    if spend_server:
        b = m.rate_budgets
        conn.execute(
            update(b).where(b.c.integration_id == integration_id).values(server_remaining=b.c.server_remaining - n)
        )


def change_budget(conn: Connection, integration_id: int, change: BudgetChange) -> None:
    """Write what a response said (see ``BudgetChange``)."""
    values: dict[str, object] = {"updated_at": utcnow()}
    if change.blocked_until is not None:
        values["blocked_until"] = change.blocked_until
    if change.set_server:
        values["server_remaining"] = change.server_remaining
        values["server_reset"] = change.server_reset
    b = m.rate_budgets
    conn.execute(update(b).where(b.c.integration_id == integration_id).values(**values))


def _budget(row: Row[tuple[float | None, int | None, float | None]]) -> BudgetRow:
    return BudgetRow(
        blocked_until=None if row.blocked_until is None else float(row.blocked_until),
        server_remaining=None if row.server_remaining is None else int(row.server_remaining),
        server_reset=None if row.server_reset is None else float(row.server_reset),
    )
