"""What a waiting ``integrations sync --wait`` / ``retry`` shows while the run executes.

The run executes elsewhere (in this process's main thread, or in a run worker the daemon launched);
a ``Follower`` thread polls our own tables (``_store._progress``: the sync run's row and its items
counted by status) and hands each ``Sample`` to a reporter:

- ``LiveReporter`` on a terminal: one ``rich`` progress line (phase, processed of dispatched, failed,
  rate, elapsed), redrawn in place;
- ``PlainReporter`` otherwise (CI logs, pipes): one line per phase (starting, enumerating, processing,
  finished), plus a heartbeat line while a phase lasts longer than ``heartbeat`` seconds.

``quiet_run_output`` keeps Dagster's console event log (and anything else the run prints) off the
screen unless ``--verbose``: see its docstring. Phases and rates are pure functions over samples.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from integrations_dagster.status import RUN_IN_FLIGHT
from integrations_dagster.store import Store
from integrations_dagster.store.progress import RunCounts, newest_run, run_counts, run_to_follow

PHASES = ("starting", "enumerating", "processing", "finished")


@dataclass(frozen=True)
class Sample:
    """The followed sync run at ``at`` seconds after the wait began (``counts`` None: no sync run yet)."""

    at: float
    counts: RunCounts | None


def phase_of(counts: RunCounts | None) -> str:
    if counts is None:
        return "starting"
    if counts.status == "enumerating":
        return "enumerating"
    if counts.status == "processing":
        return "processing"
    return "finished"


def rate(samples: Sequence[Sample], *, window: float = 5.0) -> float | None:
    """Items per second over the last ``window`` seconds: processed ones, or dispatched ones while
    nothing is processed yet (enumeration). None until two samples of the same run are ``window`` apart
    or, failing that, the first and the last."""
    runs = [s for s in samples if s.counts is not None]
    if len(runs) < 2:
        return None
    last = runs[-1]
    assert last.counts is not None
    same = [s for s in runs if s.counts is not None and s.counts.sync_run_id == last.counts.sync_run_id]
    older = [s for s in same if last.at - s.at >= window]
    first = older[-1] if older else same[0]
    assert first.counts is not None
    span = last.at - first.at
    if span <= 0:
        return None
    done = last.counts.processed - first.counts.processed
    if done <= 0 and last.counts.processed == 0:
        done = last.counts.dispatched - first.counts.dispatched
    return max(done, 0) / span


def format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} items/s"


class Reporter(Protocol):
    def start(self, title: str) -> None: ...
    def note(self, message: str) -> None: ...
    def update(self, sample: Sample) -> None: ...
    def finish(self, sample: Sample | None) -> None: ...


class PlainReporter:
    """One line per phase, each prefixed with the seconds since the wait began."""

    def __init__(self, stream: TextIO, *, heartbeat: float = 30.0) -> None:
        self.stream = stream
        self.heartbeat = heartbeat
        self.samples: list[Sample] = []
        self._printed = -1  # index in PHASES of the last phase line printed
        self._last_line_at = 0.0
        self._lock = threading.Lock()

    def _line(self, at: float, text: str) -> None:
        self.stream.write(f"[{at:6.1f}s] {text}\n")
        self.stream.flush()
        self._last_line_at = at

    def start(self, title: str) -> None:
        with self._lock:
            self._printed = 0
            self._line(0.0, f"starting: {title}")

    def note(self, message: str) -> None:
        with self._lock:
            at = self.samples[-1].at if self.samples else 0.0
            self._line(at, message)

    def _phase_text(self, phase: str, sample: Sample) -> str | None:
        c = sample.counts
        if c is None:
            return None
        if phase == "enumerating":
            return f"enumerating: sync run {c.sync_run_id}"
        if phase == "processing":
            if c.dispatched == 0 and c.chunks == 0:
                return None  # nothing to process (no items, or the run was skipped)
            return f"processing: {c.dispatched:,} items dispatched in {c.chunks} chunks"
        return (f"finished: sync run {c.sync_run_id} {c.status}: {c.processed:,} of {c.dispatched:,} items "
                f"processed, {c.failed:,} failed ({format_rate(self._average())})")

    def _average(self) -> float | None:
        runs = [s for s in self.samples if s.counts is not None]
        if not runs:
            return None
        last = runs[-1]
        assert last.counts is not None
        return last.counts.processed / last.at if last.at > 0 else None

    def update(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)
            phase = PHASES.index(phase_of(sample.counts))
            if phase > self._printed:
                for i in range(self._printed + 1, phase + 1):
                    text = self._phase_text(PHASES[i], sample)
                    if text is not None:
                        self._line(sample.at, text)
                self._printed = phase
            elif sample.at - self._last_line_at >= self.heartbeat and sample.counts is not None:
                c = sample.counts
                self._line(sample.at, f"{PHASES[phase]}: {c.processed:,} of {c.dispatched:,} items processed, "
                                      f"{c.failed:,} failed ({format_rate(rate(self.samples))})")

    def finish(self, sample: Sample | None) -> None:
        if sample is not None:
            self.update(sample)


class LiveReporter:
    """A ``rich`` progress line on a terminal, redrawn in place (4 times a second)."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream, stderr=True)
        self.samples: list[Sample] = []
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("dispatched {task.fields[dispatched]}  failed {task.fields[failed]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            refresh_per_second=4,
            # quiet_run_output decides where the run's own output goes: rich must not re-route it
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task = self.progress.add_task("starting", total=None, dispatched="0", failed="0", rate="-")

    def start(self, title: str) -> None:
        self.console.print(title)
        self.progress.start()

    def note(self, message: str) -> None:
        self.progress.console.print(message)

    def update(self, sample: Sample) -> None:
        self.samples.append(sample)
        c = sample.counts
        if c is None:
            return
        phase = phase_of(c)
        total = None if phase == "enumerating" else max(c.dispatched, 1)
        completed = c.processed if c.dispatched else (1 if phase == "finished" else 0)
        self.progress.update(self.task, description=phase, total=total, completed=completed,
                             dispatched=f"{c.dispatched:,}", failed=f"{c.failed:,}",
                             rate=format_rate(rate(self.samples)))

    def finish(self, sample: Sample | None) -> None:
        if sample is not None:
            self.update(sample)
        self.progress.stop()


class Follower:
    """Polls the sync run a waiting CLI follows, every ``interval`` seconds, in a daemon thread.

    Which run: ``sync_run_id`` when given (``retry`` re-executes a known run); otherwise, decided when
    the follower is made (before the run is requested), the integration's newest run if it is still in
    flight (the request will return that run), else the first run created after that moment.
    """

    def __init__(self, store: Store, integration_id: int, on_sample: Callable[[Sample], None], *,
                 sync_run_id: int | None = None, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.integration_id = integration_id
        self.on_sample = on_sample
        self.interval = interval
        self.clock = clock
        self.sync_run_id = sync_run_id
        self.after_id = 0
        if sync_run_id is None:
            newest = newest_run(store, integration_id)
            if newest is not None:
                if newest[1] in RUN_IN_FLIGHT:
                    self.sync_run_id = newest[0]
                else:
                    self.after_id = newest[0]
        self._t0 = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="integrations-progress", daemon=True)

    def sample(self) -> Sample:
        if self.sync_run_id is None:
            self.sync_run_id = run_to_follow(self.store, self.integration_id, after_id=self.after_id)
        counts = run_counts(self.store, self.sync_run_id) if self.sync_run_id is not None else None
        return Sample(at=self.clock() - self._t0, counts=counts)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.on_sample(self.sample())
            except Exception:  # progress is best effort: a failed read never disturbs the run
                continue

    def start(self) -> Follower:
        self._t0 = self.clock()
        self._thread.start()
        return self

    def stop(self) -> Sample | None:
        """Stop polling; return one last sample (None when it cannot be read)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            return self.sample()
        except Exception:
            return None


def _fd_of(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def quiet_run_output(*, verbose: bool) -> Iterator[TextIO]:
    """While a run executes here: yields the stream progress goes to (the original stderr).

    Without ``verbose`` everything else written to stdout or stderr meanwhile (Dagster's console event
    log, warnings, a listener's ``print``, child processes such as code servers and run workers, which
    inherit file descriptors 1 and 2) goes to a temporary file that is discarded. With ``verbose`` it
    goes to stderr. Either way stdout receives nothing, so ``--json`` stays exactly one object.
    Python-level streams are swapped (Dagster's console handler looks up ``sys.stderr`` per record)
    and, when they are the real descriptors 1 and 2, so are the descriptors.
    """
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    out_fd, err_fd = _fd_of(sys.stdout), _fd_of(sys.stderr)
    saved_out = saved_err = None
    old_out, old_err = sys.stdout, sys.stderr
    if err_fd == 2:
        progress: TextIO = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(old_err, "encoding", None) or
                                     "utf-8", errors="replace")
    else:
        progress = old_err
    sink: TextIO = progress if verbose else tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    sink_fd = _fd_of(sink)
    try:
        if sink_fd is not None:
            if out_fd == 1:
                saved_out = os.dup(1)
                os.dup2(sink_fd, 1)
            if err_fd == 2 and not verbose:
                saved_err = os.dup(2)
                os.dup2(sink_fd, 2)
        sys.stdout = sink
        if not verbose:
            sys.stderr = sink
        yield progress
    finally:
        for s in (sys.stdout, sys.stderr, sink):
            with contextlib.suppress(Exception):
                s.flush()
        sys.stdout, sys.stderr = old_out, old_err
        if saved_out is not None:
            os.dup2(saved_out, 1)
            os.close(saved_out)
        if saved_err is not None:
            os.dup2(saved_err, 2)
            os.close(saved_err)
        if sink is not progress:
            sink.close()
        if progress is not old_err:
            with contextlib.suppress(Exception):
                progress.flush()
            progress.close()
