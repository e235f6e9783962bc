"""``BackgroundWriter``: database writes done off the hot path, on one worker thread (in order) or a few.

Why: on PostgreSQL most of a bulk write (a ``COPY`` of dispatched items, the status update of a
batch of finished items) is spent waiting for the server, in another process and often on another
core. Handing it to a worker thread lets the caller go on (fetching the next page, running the
next batch of listeners) meanwhile. Writes run strictly in submission order; at most ``depth``
wait, so memory stays bounded. Nothing is promised until ``drain`` returns: callers drain before
they report progress (end of enumeration, end of a chunk step), so a crash can only lose work that
was never acknowledged, which the engine already treats as unfinished.

With ``workers`` > 1 (a big enumeration's writes on PostgreSQL, ``SyncSettings.write_connections``)
writes start in submission order on several threads, each with its own database connection, and
may finish out of order: one batch's ``COPY`` and listener statement run on the server while the
next batch is being sent, so the server's work uses more than one core. What must follow the
submission order anyway is the caller's to sequence (``InOrder``: a session takes its batches' item
ids in dispatch order).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class BackgroundWriter:
    """Runs submitted writes on ``workers`` threads (in order with one); ``drain`` waits and re-raises."""

    def __init__(self, name: str, depth: int = 2, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, name=f"integrations-{name}" + (f"-{i}" if i else ""),
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure later writes are dropped: the caller fails
                    fn, args = job
                    fn(*args)
            except BaseException as exc:
                if self._error is None:  # the first error is the one reported
                    self._error = exc
            finally:
                self._queue.task_done()

    def check(self) -> None:
        """Raise the first error of a write done so far, if any."""
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (blocks while ``depth`` writes are waiting)."""
        self.check()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until every submitted write has run; raise the first write error."""
        self._queue.join()
        self.check()

    def stop(self) -> None:
        """Finish what is queued and end the threads (errors are left to ``drain``/``check``)."""
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WriterStopped(RuntimeError):
    """An earlier write of the same sequence failed: this one stops before doing anything."""


class InOrder:
    """Lets writes running on several threads do one step each in submission order (their ``seq``).

    ``step(seq, fn)`` waits until every write before ``seq`` has done its step, runs ``fn`` and lets
    the next one go. A write that fails before (or in) its step must call ``fail``: the writes waiting
    behind it raise ``WriterStopped`` instead of waiting for ever."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next = 0
        self._failed = False

    def step(self, seq: int, fn: Callable[[], Any]) -> Any:
        with self._cv:
            while self._next != seq and not self._failed:
                self._cv.wait()
            if self._failed:
                raise WriterStopped(f"write {seq}: an earlier write failed")
            try:
                out = fn()
            except BaseException:
                self._failed = True
                self._cv.notify_all()
                raise
            self._next += 1
            self._cv.notify_all()
            return out

    def fail(self) -> None:
        with self._cv:
            self._failed = True
            self._cv.notify_all()
