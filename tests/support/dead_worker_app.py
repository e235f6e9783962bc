"""Definitions for the dead-run-worker measurement (tests/reliability/dead_worker.py): the synthetic
provider with its sensor on, a listener that records which process delivered each item (so the
measurement can SIGKILL the run worker the daemon launched) and sleeps ``KILL_APP_DELAY`` per item."""

from __future__ import annotations

import os
import time
from pathlib import Path

from integrations_dagster import SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider


def deliver(event: SyntheticItem) -> None:
    with Path(os.environ["KILL_APP_LOG"]).open("a") as fh:
        fh.write(f"{os.getpid()} {event.external_id}\n")
    time.sleep(float(os.environ.get("KILL_APP_DELAY", "0")))


defs = build_definitions(
    providers=[SyntheticProvider()],
    listeners=[(SyntheticItem, deliver)],
    settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=1, chunk_size=10, listener_batch_size=1),
)
