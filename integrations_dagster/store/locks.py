"""Chunk claims: at most one step works on a chunk of a run at a time, on both databases.

PostgreSQL: a session advisory lock on (run id, chunk) held on a connection of its own for the
step's duration. SQLite: an exclusive POSIX record lock on one byte (at an offset made of the run
id and the chunk) of a lock file next to the database (``<database>-chunks.lock``), plus an
in-process registry (POSIX locks are per process, so two threads of one process need it too; an
in-memory database only has the registry). Both are released by the operating system or the
server when the worker dies, so a killed step leaves its unfinished items for the next attempt.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from integrations_dagster.errors import IntegrationsError
from integrations_dagster.store.store import Store


class ChunkLockLost(IntegrationsError):
    """The chunk's claim was lost while the step ran (e.g. the PostgreSQL session holding the
    advisory lock was terminated): the step stops before running more items, leaving them pending."""


class ChunkClaim:
    """What ``chunk_lock`` yields: true when this step holds the chunk; ``check()`` before each batch."""

    def __init__(self, held: bool, conn: Any = None, run_id: int = 0, chunk: int = 0) -> None:
        self.held = held
        self.lost = False
        self._conn = conn
        self._key = {"run": run_id, "chunk": chunk}

    def __bool__(self) -> bool:
        return self.held

    def check(self) -> None:
        """Raise ``ChunkLockLost`` unless this step still holds the chunk (one round trip on PostgreSQL)."""
        if self._conn is None:
            return
        try:
            still = self._conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND classid = :run AND objid = :chunk AND objsubid = 2 AND granted"), self._key).scalar()
            self._conn.commit()
        except DBAPIError as exc:
            self.lost = True
            raise ChunkLockLost(
                f"sync run {self._key['run']} chunk {self._key['chunk']}: the advisory lock's database session "
                f"is gone ({type(exc.orig).__name__}: {str(exc.orig).strip()[:200]}); another step may claim the "
                "chunk, so this one stops; its unfinished items stay pending for the next attempt") from exc
        if not still:
            self.lost = True
            raise ChunkLockLost(
                f"sync run {self._key['run']} chunk {self._key['chunk']}: the advisory lock is no longer held; "
                "this step stops; its unfinished items stay pending for the next attempt")


@contextmanager
def chunk_lock(store: Store, run_id: int, chunk: int) -> Iterator[ChunkClaim]:
    """Hold chunk ``chunk`` of run ``run_id`` for this step: yields a false claim if another step holds it.

    PostgreSQL: claiming costs one lock instead of a write per item (items stay ``pending`` while
    they run). The lock's connection must not be closed by the server for being idle
    (``idle_session_timeout`` is turned off for it), and a step checks it still holds the lock
    before each batch (``ChunkClaim.check``): a session terminated under it (an administrator, a
    failover) stops the step instead of letting two steps run the chunk.
    """
    if store.is_sqlite:
        with _sqlite_chunk_lock(store, run_id, chunk) as held:
            yield ChunkClaim(held)
        return
    # Autocommit: the lock is the session's, so its statements need no transaction of their own
    # (no BEGIN and COMMIT round trips around the lock, each check and the unlock). The session setting
    # and the lock in one statement; the pool resets autocommit when the connection goes back.
    conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        got = conn.execute(text("SELECT set_config('idle_session_timeout', '0', false), "
                                "pg_try_advisory_lock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
        held = bool(got.one()[1])
        conn.commit()
        claim = ChunkClaim(held, conn if held else None, run_id, chunk)
        try:
            yield claim
        finally:
            if claim.lost:  # the session (and its lock) is gone: drop the connection
                conn.invalidate()
            elif held:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
                    conn.commit()
                except SQLAlchemyError:  # the session died meanwhile, and its lock with it
                    conn.invalidate()
    except BaseException:
        conn.invalidate()  # never hand a connection that may still hold the lock back to the pool
        raise
    finally:
        conn.close()


# --- SQLite ------------------------------------------------------------------------------------
_registry_lock = threading.Lock()
_held: set[tuple[str, int, int]] = set()
_files: dict[str, int] = {}
_pid = os.getpid()
#: Chunks per run in the lock file's offsets (a chunk number at or above this shares a byte: still safe,
#: only two such chunks of one run exclude each other).
_CHUNK_SPAN = 1 << 24


def _lock_file(path: str) -> int:
    global _pid
    if os.getpid() != _pid:  # a forked child: neither the parent's locks nor its registry are ours
        _files.clear()
        _held.clear()
        _pid = os.getpid()
    fd = _files.get(path)
    if fd is None:
        # Kept open while this process holds any lock on the file: closing any descriptor of the file
        # drops every POSIX lock the process holds on it.
        fd = _files[path] = os.open(path + "-chunks.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return fd


def _close_if_unused(path: str) -> None:
    """Close the lock file once this process holds no chunk of it (called under the registry lock)."""
    if path in _files and not any(k[0] == path for k in _held):
        os.close(_files.pop(path))


@contextmanager
def _sqlite_chunk_lock(store: Store, run_id: int, chunk: int) -> Iterator[bool]:
    database = store.engine.url.database or ""
    on_disk = database not in ("", ":memory:") and not database.startswith("file::memory:")
    path = os.path.abspath(database) if on_disk else f"memory:{id(store.engine)}"
    key = (path, run_id, chunk)
    offset = run_id * _CHUNK_SPAN + chunk % _CHUNK_SPAN
    with _registry_lock:
        if key in _held:
            held = False
        else:
            held = True
            if on_disk:
                import fcntl

                try:
                    fcntl.lockf(_lock_file(path), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                except OSError:  # another process holds it
                    held = False
                    _close_if_unused(path)
            if held:
                _held.add(key)
    try:
        yield held
    finally:
        if held:
            with _registry_lock:
                _held.discard(key)
                if on_disk and path in _files:
                    import fcntl

                    fcntl.lockf(_files[path], fcntl.LOCK_UN, 1, offset)
                    _close_if_unused(path)
