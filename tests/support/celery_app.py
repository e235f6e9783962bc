"""Definitions for tests/test_celery.py and bench/celery.py: the synthetic provider's sync job on the
Celery executor (or in-process, for the benchmark's baseline).

``make_defs(database_url, queue, log, delay)`` is a factory with JSON-able arguments, so the Celery workers
rebuild exactly these definitions from the run's reconstructable job. Every delivery of an item appends
``WORKER pid external_id`` to ``log`` (one short ``O_APPEND`` write per line: lines from both workers
never interleave); ``WORKER`` is the worker's ``INTEGRATIONS_TEST_WORKER`` environment variable.
"""

from __future__ import annotations

import os
import time

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions, listener
from providers.synthetic import SyntheticItem, SyntheticProvider


def make_defs(database_url: str, queue: str = "dagster", log: str = "", delay: float = 0.0,
              executor: str = "celery", chunk_size: int = 500, listener_batch_size: int = 50) -> Definitions:
    @listener(SyntheticItem)
    def deliver(event: SyntheticItem) -> None:
        if delay:
            time.sleep(delay)
        if log:
            line = f"{os.environ.get('INTEGRATIONS_TEST_WORKER', '-')} {os.getpid()} {event.external_id}\n"
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    return build_definitions(
        providers=[SyntheticProvider()],
        listeners=[deliver],
        settings=SyncSettings(database_url=database_url, executor=executor, celery_queue=queue,  # type: ignore[arg-type]
                              chunk_size=chunk_size, listener_batch_size=listener_batch_size,
                              max_items_per_batch=10**9),
        sensors=False,
        operator_jobs=False,
    )
