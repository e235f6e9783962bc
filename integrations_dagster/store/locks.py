"""PostgreSQL advisory locks (SQLite has none: its write lock serialises writers anyway)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from integrations_dagster.store.store import Store


@contextmanager
def chunk_lock(store: Store, run_id: int, chunk: int) -> Iterator[bool]:
    """Hold chunk ``chunk`` of run ``run_id`` for this step: yields False if another step holds it.

    PostgreSQL: a session advisory lock on (run id, chunk) held on its own connection for the
    step's duration. Claiming a chunk then costs one lock instead of a write per item (items stay
    ``pending`` while they run), and a worker that dies releases it with its connection, leaving its
    unfinished items pending for the next attempt. SQLite yields True: there the claim marks the
    items ``processing`` (one writer at a time anyway).
    """
    if store.is_sqlite:
        yield True
        return
    conn = store.engine.connect()
    try:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
        held = bool(got.scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
                conn.commit()
    except BaseException:
        conn.invalidate()  # never hand a connection that may still hold the lock back to the pool
        raise
    finally:
        conn.close()
