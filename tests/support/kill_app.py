"""Definitions for the kill -9 suite (tests/reliability): ``integrations sync ID --wait`` in a
subprocess that is SIGKILLed at a random moment.

- ``KILL_APP_LOG``: every delivery appends the item's external id to this file (a line each), before
  the engine records the item's success (so the log is a superset of what the store calls success).
- ``KILL_APP_DELAY``: seconds each delivery sleeps (spreads the run over time so kills land mid-chunk).
- ``KILL_APP_STAGED``: deliver through a staged listener (same log, same failures) instead, so that on
  PostgreSQL the chunks are pipelined (processed while the enumeration runs, ``engine.pipeline``).
- ``KILL_APP_FAIL``: while this file exists, every item whose index is 2 modulo 4 fails (raises before it
  is logged), so a run ends partial with failed items for an operator action to recover.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from integrations_dagster import StagedBatch, listener
from providers.synthetic import SyntheticItem
from tests.support.subprocess_app import synthetic_defs


def deliver(event: SyntheticItem) -> None:
    fail = os.environ.get("KILL_APP_FAIL")
    if fail and Path(fail).exists() and event.index % 4 == 2:
        raise RuntimeError(f"kill suite: {event.external_id} fails while {fail} exists")
    with Path(os.environ["KILL_APP_LOG"]).open("a") as fh:
        fh.write(event.external_id + "\n")
    time.sleep(float(os.environ.get("KILL_APP_DELAY", "0")))


@listener(SyntheticItem, staged=True)
def deliver_staged(batch: StagedBatch) -> None:
    for event in batch.events():
        deliver(event)


defs = synthetic_defs(deliver, deliver_staged if os.environ.get("KILL_APP_STAGED") else None)
