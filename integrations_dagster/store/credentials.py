"""Credentials rows under a lock: how a token refresh is serialised across threads, processes and hosts.

A refresh token may rotate: the token endpoint hands out a new one and refuses the old one from then
on. Two processes refreshing one integration at once would both send the old refresh token, the
second would be refused, and with some APIs the whole grant is revoked. So a refresh holds a
database lock for the integration, re-reads the stored (encrypted) credentials under it, refreshes
only if they still need it, and writes the new ones before letting go:

- PostgreSQL: ``pg_advisory_xact_lock(CLASS, integration_id)`` inside the transaction; released at
  commit, rollback or when the process dies (its connection closes). It does not touch the
  integration row, so run start (which locks that row) is never blocked by a slow token endpoint.
- SQLite: the transaction is ``BEGIN IMMEDIATE``, the database-wide write lock; there is one
  writer at a time anyway, and a refresh is rare (about once an hour per integration) and bounded by
  the token endpoint's timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, select, text, update

from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store, utcnow

#: First key of the two-key advisory lock. Negative: ``chunk_lock`` uses (run id, chunk) with
#: positive run ids, so the two never collide.
REFRESH_LOCK_CLASS = -14


@contextmanager
def credentials_lock(store: Store, integration_id: int) -> Iterator[Connection]:
    """A transaction holding the integration's refresh lock; read and write credentials on it."""
    with store.begin() as conn:
        if not store.is_sqlite:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:cls, :id)"), {"cls": REFRESH_LOCK_CLASS, "id": integration_id}
            )
        yield conn


def read_credentials(conn: Connection, integration_id: int) -> str | None:
    """The stored (encrypted) credentials of one integration; raises ``KeyError`` when it is gone."""
    row = conn.execute(
        select(m.integrations.c.credentials).where(m.integrations.c.id == integration_id)
    ).first()
    if row is None:
        raise KeyError(f"integration {integration_id} does not exist")
    value = row[0]
    return None if value is None else str(value)


def write_credentials(conn: Connection, integration_id: int, stored: str | None) -> None:
    """Replace the stored (already encrypted) credentials of one integration."""
    conn.execute(
        update(m.integrations)
        .where(m.integrations.c.id == integration_id)
        .values(credentials=stored, updated_at=utcnow())
    )
