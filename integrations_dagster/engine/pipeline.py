"""Pipelined chunks: a run's chunks processed while its enumeration is still going on.

Why: a big sync is enumerated (pages fetched, validated, dispatched, written with ``COPY``) and
only then its chunks run their listeners. With staged (SQL) listeners on PostgreSQL a chunk's
listener work is almost all done by the database server, in another process and on another core,
while Python sits waiting for it; the enumeration meanwhile is Python parsing pages. So each chunk
whose items are all written is handed, during the enumeration, to one worker thread that processes
it with the machinery of a chunk step (``engine.chunks.process_chunk``: the chunk lock, the claim,
the staged listeners, the outcomes per batch). The mapped chunk steps still run afterwards: they
find those chunks finished and return at once, or take up what is left (items to retry, a chunk the
pipeline did not finish), with the usual retries, failure reports and re-execution.

Rules (``pipelining``, ``staged_only`` and ``complete_chunks`` below; the per-item records, retries,
superseding and cursor rule are the chunk step's own):

- only on PostgreSQL, with ``SyncSettings.pipeline_chunks`` on (off by default: see the setting), and only while every
  event type dispatched so far has staged listeners alone: a Python listener keeps today's path
  (the pipeline hands over no further chunk once one appears);
- a chunk is handed over once the rows of all its items are committed (``complete_chunks``), the
  last, partial one once the enumeration has returned; a run of one chunk never is (a small sync
  stays as it was: its chunk step runs it);
- a pipelined pass runs each ready item once: an item to retry keeps its new state and waits,
  pending, for its chunk step, which retries it (and reports every failed item of its chunk);
- the claim requires the run to be enumerating (under the run row's lock), and every staged
  transaction first locks the run row and checks it still is (``PipelineGuard``), so a run
  discarded meanwhile (its enumeration failed, or another process presumed it dead) never gets a
  listener run for its rows; an enumeration that fails stops the pipeline before discarding;
- the enumeration waits for the pipeline before it ends, so no chunk step ever meets a chunk the
  pipeline still holds. A kill at any moment leaves what a killed chunk step leaves: unfinished
  items pending in a run that is discarded and re-delivered from the unchanged cursor.

A staged listener may thus have run for some items of an enumeration that then fails: their rows
are discarded with the run and the next run delivers them again. Listeners are idempotent anyway
(every item may be retried); leave ``pipeline_chunks`` off for the strict "nothing before the
enumeration has finished" order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.events import InvalidPayload
from integrations_dagster.engine.background import BackgroundWriter
from integrations_dagster.errors import IntegrationsError, SyncRunDiscarded
from integrations_dagster.status import RunStatus

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.store import Store


# --- decisions (pure) ----------------------------------------------------------------------------
def pipelining(*, enabled: bool, postgres: bool) -> bool:
    """Whether a run's enumeration pipelines its chunks at all: the setting is on and the store is
    PostgreSQL (SQLite has one writer at a time: nothing would overlap)."""
    return enabled and postgres


def staged_only(staged_flags: Iterable[Sequence[bool]]) -> bool:
    """Whether the chunks written so far may be pipelined: every event type dispatched so far has
    staged listeners, and only those (``staged_flags``: per event type, one flag per listener). A
    type without listeners here is not pipelined: the engine that enumerates may not be the one
    whose chunk steps run the listeners (another process with other definitions)."""
    return all(flags and all(flags) for flags in staged_flags)


def complete_chunks(written: int, chunk_size: int, *, finished: bool, dispatched: int) -> int:
    """How many leading chunks may be handed over: ``written`` rows are committed, in dispatch order,
    of ``dispatched`` so far. While the enumeration runs only full chunks count; once it has
    returned (``finished``) the last, partial one does too. A run of one chunk (``dispatched`` not
    above ``chunk_size``) is never pipelined: nothing would overlap, and a small sync stays as it
    was (its chunk step runs it)."""
    if dispatched <= chunk_size:
        return 0
    if finished:
        return -(-written // chunk_size)
    return written // chunk_size


# --- applied -------------------------------------------------------------------------------------
class PipelineStopped(IntegrationsError):
    """The enumeration ended (failed) while a pipelined chunk ran: the chunk stops before its next batch."""


class PipelineGuard:
    """What a pipelined chunk consults before each batch and inside each staged transaction."""

    def __init__(self, store: Store, run_id: int) -> None:
        self._store = store
        self._run_id = run_id
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def check(self) -> None:
        if self._stopped.is_set():
            raise PipelineStopped(f"sync run {self._run_id}: its enumeration ended; the pipelined chunk stops")

    def in_transaction(self, conn: Connection) -> None:
        """The run is still enumerating, and stays so until ``conn``'s transaction ends (row lock)."""
        self.check()
        status = self._store.run_status(conn, self._run_id, lock=True)
        if status != RunStatus.ENUMERATING:
            raise SyncRunDiscarded(self._run_id, RunStatus.ENUMERATING, status, "run a pipelined chunk")


class ChunkPipeline:
    """Hands the chunks of one enumerating run to a worker thread as their rows are written."""

    def __init__(
        self,
        engine: SyncEngine,
        store: Store,
        run_id: int,
        chunk_size: int,
        event_classes: Callable[[], Iterable[type]],
        dispatched: Callable[[], int],
        log: Any,
    ) -> None:
        self._engine = engine
        self._store = store
        self._run_id = run_id
        self._chunk_size = chunk_size
        self._event_classes = event_classes
        self._dispatched = dispatched
        self._log = log
        self.guard = PipelineGuard(store, run_id)
        self._next = 0  # the next chunk to hand over
        self._off = False  # no further chunk is handed over (a Python listener, a failed pass)
        self._worker: BackgroundWriter | None = None
        self.processed = 0  # chunks a pipelined pass went through
        self.items = 0  # items that succeeded in pipelined passes

    def written(self, rows: int) -> None:
        """``rows`` items of the run are committed (called by the session's writer thread, which
        must not fail because of the pipeline: a problem here only turns the pipeline off)."""
        try:
            self._hand_over(complete_chunks(rows, self._chunk_size, finished=False, dispatched=self._dispatched()))
        except Exception as exc:  # pragma: no cover - defensive: the chunk steps do the work anyway
            self._off = True
            self._log.warning(f"sync run {self._run_id}: chunk pipeline off ({type(exc).__name__}: {exc})")

    def finish(self, dispatched: int) -> None:
        """The enumeration returned and every row is written: hand over the rest, then wait until
        every handed-over chunk is done."""
        self._hand_over(complete_chunks(dispatched, self._chunk_size, finished=True, dispatched=dispatched))
        self._close()
        if self.processed:
            self._log.info(f"sync run {self._run_id}: {self.processed} chunks ({self.items} items) processed while "
                           "enumerating (pipelined)")

    def stop(self) -> None:
        """The enumeration failed: stop the chunk in flight before its next batch, drop the rest."""
        self.guard.stop()
        self._close()

    def _close(self) -> None:
        if self._worker is not None:
            self._worker.drain()
            self._worker.stop()
            self._worker = None

    def _hand_over(self, upto: int) -> None:
        if self._off or upto <= self._next or self.guard.stopped:
            return
        listeners = self._engine.listeners
        # Invalid items fail at once whatever the listeners (engine.dispatch): they do not decide.
        flags = [[spec.staged for spec in listeners.for_type(cls)] for cls in list(self._event_classes())
                 if not issubclass(cls, InvalidPayload)]
        if not staged_only(flags):
            self._off = True
            if self._next:
                self._log.info(f"sync run {self._run_id}: an event type with a Python listener was dispatched; "
                               f"chunks from {self._next} on are left to their chunk steps")
            return
        if self._worker is None:
            self._worker = BackgroundWriter("chunk-pipeline", depth=0)  # unbounded: never stalls the writer
        for chunk in range(self._next, upto):
            self._worker.submit(self._process, chunk)
        self._next = upto

    def _process(self, chunk: int) -> None:
        if self.guard.stopped or self._off:
            return
        from integrations_dagster.engine.chunks import process_chunk

        try:
            res = process_chunk(self._engine, self._store, self._run_id, chunk, pipelined=self.guard, log=self._log)
        except Exception as exc:  # the chunk step does it again; no further chunk is handed over
            self._off = True
            if not self.guard.stopped:
                self._log.warning(f"sync run {self._run_id} chunk {chunk}: pipelined pass stopped "
                                  f"({type(exc).__name__}: {str(exc)[:300]}); its chunk step takes it up")
            return
        self.processed += 1
        self.items += res.succeeded
