"""``BackgroundWriter``: database writes done in order on one worker thread, off the hot path.

Why: on PostgreSQL most of a bulk write (a ``COPY`` of dispatched items, the status update of a
batch of finished items) is spent waiting for the server, in another process and often on another
core. Handing it to a worker thread lets the caller go on (fetching the next page, running the
next batch of listeners) meanwhile. Writes run strictly in submission order; at most ``depth``
wait, so memory stays bounded. Nothing is promised until ``drain`` returns: callers drain before
they report progress (end of enumeration, end of a chunk step), so a crash can only lose work that
was never acknowledged, which the engine already treats as unfinished.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class BackgroundWriter:
    """Runs submitted writes in order on a worker thread; ``drain`` waits and re-raises."""

    def __init__(self, name: str, depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"integrations-{name}", daemon=True)
        self._thread.start()

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
        """Finish what is queued and end the thread (errors are left to ``drain``/``check``)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
