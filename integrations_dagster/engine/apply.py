"""Applied at write: a big sync's staged listeners run in the transaction that records its items.

Why: on PostgreSQL a staged (set-based SQL) listener's work is one statement over the batch; what
used to surround it cost more than the statement itself: each item recorded ``pending`` (``COPY``),
then per chunk a claim reading the rows back, the staged statement, and a status ``UPDATE`` of every
item (each row rewritten with its payload, every index of ``sync_items`` fed), plus one Dagster step
per chunk with its events. When every listener of a batch's event types is staged, the enumeration's
writer (``SyncSession._insert``, on its background thread) runs those listeners itself, in the same
transaction that records the batch, and records the items as succeeded on their first attempt: no
pending rows, no claim, no status update, and a chunk with nothing left needs no chunk step.

Rules (``may_apply`` below is the decision, pure; ``WriteApplier`` applies it):

- only on PostgreSQL, with ``SyncSettings.apply_at_write`` on (the default), in a fresh
  enumeration (a sync run being enumerated, never items re-run), and only for event types whose
  listeners in the enumerating engine are all staged and synchronous (a Python or batch listener, a
  queued one, an event type without listeners, or an invalid item keeps today's path: the batch is
  recorded pending and its chunk step runs it);
- recorded and processed are atomic: the run row is locked and checked ``enumerating`` first
  (``_insert``'s compare-and-set), then the batch is copied and its staged listeners run under a
  ``SAVEPOINT``; a crash before the commit leaves neither the items nor their effects, the cursor
  has not moved, and the next run enumerates them again;
- if a staged call fails (the listener raises, a constraint, ``RateLimited``), the savepoint is rolled
  back and the whole batch is recorded pending, as without this: its chunk step retries it with
  culprit isolation and the retry policy, so one bad item never takes the run down;
- ids are taken from the table's sequence for the whole batch before it is recorded, so items keep
  ids in dispatch order (supersession and ``later_versions_possible`` rely on it) whichever way
  each row is recorded; duplicates within a batch are the listener's (``DISTINCT ON`` in GitHub's).

An item applied at write is an ordinary succeeded item afterwards: reconcile counts it, its
checkpoint moves the cursor, its payload is kept (``show-item``, ``replay``, the timeline read it).
As with pipelined chunks, a staged listener may have run for batches of an enumeration that then
fails: those rows are discarded with the run and the next run delivers them again (listeners are
idempotent: any item may be retried).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.events import InvalidPayload
from integrations_dagster.authoring.listeners import ListenerRegistry, is_queued
from integrations_dagster.authoring.staged import StagedBatch
from integrations_dagster.engine.dispatch import EventTypes, call
from integrations_dagster.store import items as item_sql

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection

    from integrations_dagster.authoring.context import SyncContext
    from integrations_dagster.store import Store

#: Index of the event type's name and of the chunk in a session row (``Store._ITEM_COLUMNS`` order).
_TYPE, _CHUNK = 8, 2


# --- decision (pure) ----------------------------------------------------------------------------
def may_apply(*, enabled: bool, postgres: bool, fresh_enumeration: bool, invalid: bool,
              staged_flags: Sequence[bool]) -> bool:
    """Whether items of one event type may be applied at write.

    ``staged_flags``: one flag per listener of the type in the enumerating engine, True for a staged
    listener that runs synchronously (not queued). All of them must be staged, and there must be at
    least one: without a listener here, the chunk steps (perhaps in another process, with other
    definitions) decide. ``invalid``: an invalid item (``InvalidPayload``) fails at its chunk step
    whatever the listeners. ``fresh_enumeration``: items being recorded by a run's enumeration, not
    items run again (retries, re-executions: those are the chunk steps')."""
    return (enabled and postgres and fresh_enumeration and not invalid
            and bool(staged_flags) and all(staged_flags))


# --- applied ------------------------------------------------------------------------------------
class WriteApplier:
    """Records a session's batches, applying the staged listeners of the event types that may be."""

    def __init__(self, store: Store, listeners: ListenerRegistry, types: EventTypes, *, enabled: bool,
                 context: SyncContext | None = None) -> None:
        self._store = store
        self._listeners = listeners
        self._types = types
        self._enabled = enabled and not store.is_sqlite
        self._context = context
        self._decided: dict[str, type | None] = {}  # event type name -> its class when it may be applied
        self.applied = 0  # items recorded as succeeded
        self.fallbacks = 0  # batches whose staged call failed: recorded pending
        self.pending_chunks: set[int] = set()  # chunks that have pending items: they need their chunk step
        self.last_problem: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._enabled

    def _applicable(self, type_name: str) -> type | None:
        if type_name in self._decided:
            return self._decided[type_name]
        try:
            cls: Any = self._types.resolve(type_name)
        except Exception:  # the chunk step fails it, as today
            cls = None
        ok = cls is not None and may_apply(
            enabled=self._enabled, postgres=not self._store.is_sqlite, fresh_enumeration=True,
            invalid=issubclass(cls, InvalidPayload),
            staged_flags=[spec.staged and not is_queued(spec) for spec in self._listeners.for_type(cls)])
        self._decided[type_name] = cls if ok else None
        return self._decided[type_name]

    def record(self, conn: Connection, rows: list[tuple[Any, ...]], now: datetime, *,
               ids: Sequence[int] | None = None) -> None:
        """Record ``rows`` in ``conn``'s transaction (the run row already locked and checked by the
        caller), applying what may be applied; on a failed staged call the batch is recorded pending.
        ``ids``: the rows' item ids when the caller took them (parallel writers: dispatch order)."""
        if not rows:
            return
        classes = [self._applicable(row[_TYPE]) for row in rows] if self._enabled else []
        if not any(c is not None for c in classes):
            self._store.insert_item_rows(conn, rows, ids=ids)
            with self._lock:
                self.pending_chunks.update(row[_CHUNK] for row in rows)
            return
        if ids is None:
            ids = item_sql.allocate_item_ids(conn, len(rows))
        flags = [c is not None for c in classes]
        by_type: dict[type, list[int]] = {}
        for i, cls in zip(ids, classes, strict=True):
            if cls is not None:
                by_type.setdefault(cls, []).append(i)
        try:
            with item_sql.savepoint(conn):
                item_sql.copy_items_with_ids(conn, rows, ids, flags, now)
                self._apply(conn, by_type)
        except Exception as exc:  # rolled back to the savepoint: record the batch pending, as without this
            item_sql.copy_items_with_ids(conn, rows, ids, [False] * len(rows), now)
            with self._lock:
                self.fallbacks += 1
                self.last_problem = exc
                self.pending_chunks.update(row[_CHUNK] for row in rows)
            return
        with self._lock:  # (parallel writers record batches at the same time)
            self.applied += sum(flags)
            self.pending_chunks.update(row[_CHUNK] for row, ok in zip(rows, flags, strict=True) if not ok)

    def _apply(self, conn: Connection, by_type: dict[type, list[int]]) -> None:
        from integrations_dagster.authoring.context import sync_context

        for cls, ids in by_type.items():
            for spec in self._listeners.for_type(cls):
                batch = StagedBatch(conn, ids, cls)
                if self._context is not None:
                    with sync_context(self._context):
                        problem = call(spec, batch)
                else:
                    problem = call(spec, batch)
                if problem is not None:
                    raise problem[0]
