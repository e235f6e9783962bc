"""Compute-log capture without helper processes: ``InProcessComputeLogManager`` (our ``dagster.yaml``).

Dagster's default ``LocalComputeLogManager`` captures a run's stdout and stderr into files (what the UI
shows as a step's raw logs) and mirrors each file back to the terminal with a ``tail -F`` process and a
Python watcher process per stream (``dagster._core.execution.compute_logs.execute_posix_tail``): four
processes started and stopped around every run. For a small sync that is a large part of the run
(measured in docs/BENCHMARKS.md "Fixed cost of one sync": about a quarter of a no-change sync), and
``tail`` polls once a second, so the terminal can miss the last lines
(https://github.com/dagster-io/dagster/issues/23336).

This manager keeps everything the UI and the webserver read (the same files under the same keys, the
same completion marker, the same subscriptions: it *is* a ``LocalComputeLogManager``) and replaces only
the mirroring: each stream's file descriptor is pointed at its log file as Dagster does, and a thread of
this process copies what the file grows by to the original descriptor every 0.1 s. No process is
started, and nothing is missed at the end (the rest is copied after the descriptors are restored).

Configured in ``dagster.yaml`` (the project's, which the README's demo installs)::

    compute_logs:
      module: integrations_dagster.orchestration.compute_logs
      class: InProcessComputeLogManager

``base_dir`` defaults to ``$DAGSTER_HOME/storage``, where Dagster's default manager keeps them.

Dagster has no public module for compute-log managers; ``LocalComputeLogManager`` is marked
``@public`` in ``dagster._core.storage.local_compute_log_manager``, the module its own docs name for
``dagster.yaml``, so that is where it is imported from.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import IO, Any

from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file

_READ = 65536
#: How often the mirror copies new output to the terminal (Dagster's ``tail -F``: once a second).
_POLL_SECONDS = 0.1


def _fileno(stream: IO[Any]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's stand-in stream, a closed one
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:  # the original target went away (a closed terminal, a gone client): the file has it
        pass


class _Mirror:
    """Point ``fd`` at the log file (as Dagster's capture does); a thread of this process copies what the
    file grows by to the original target, instead of a ``tail`` process and its watcher."""

    def __init__(self, stream: IO[Any], fd: int, path: str) -> None:
        self._stream, self._fd = stream, fd
        stream.flush()
        self._saved = os.dup(fd)  # the original target (a terminal, the client's pipe, /dev/null)
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, fd)
        os.close(target)
        self._reader = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._reader.seek(0, os.SEEK_END)  # what the file held before this capture is not repeated
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"compute-log-mirror-{fd}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        while data := self._reader.read(_READ):
            _write_all(self._saved, data)

    def _follow(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self._copy()

    def close(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, self._fd)  # the capture ends; a process the run left running keeps the file
        self._stop.set()
        self._thread.join()
        self._copy()  # the last lines: nothing written before the end of the capture is missed
        self._reader.close()
        os.close(self._saved)


@contextmanager
def mirror_stream(stream: IO[Any], path: str) -> Iterator[None]:
    """While the context is open, everything written to ``stream``'s file descriptor (by this process
    and its children) goes to ``path`` and is mirrored to where the descriptor pointed before. A stream
    without a descriptor is left alone."""
    ensure_file(path)
    fd = _fileno(stream)
    if fd is None:
        yield
        return
    mirror = _Mirror(stream, fd, path)
    try:
        yield
    finally:
        mirror.close()


class InProcessComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` whose capture starts no processes (see the module docstring)."""

    def __init__(self, base_dir: str | None = None, polling_timeout: float | None = None,
                 inst_data: ConfigurableClassData | None = None) -> None:
        if base_dir is None:
            from integrations_dagster.orchestration.sqlite_storage import base_dir_of

            base_dir = os.path.join(base_dir_of({}, "compute_logs: config: base_dir"), "storage")
        super().__init__(base_dir, polling_timeout=polling_timeout, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> Any:
        from dagster import Field, Float, StringSource

        return {"base_dir": Field(StringSource, is_required=False),
                "polling_timeout": Field(Float, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> InProcessComputeLogManager:
        return cls(inst_data=inst_data, **dict(config_value))

    @contextmanager
    def capture_logs(self, log_key: Any) -> Generator[CapturedLogContext, None, None]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with mirror_stream(sys.stdout, out), mirror_stream(sys.stderr, err):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # type: ignore[no-untyped-call]  # as Dagster's: capture complete
