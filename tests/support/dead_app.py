"""Definitions for the dead-run test (test_run_lifecycle): ``integrations sync ID --wait`` in a
subprocess that is SIGKILLed while a listener hangs.

- ``DEAD_APP_LOG``: every delivery appends the item's external id to this file (a line each).
- ``DEAD_APP_HANG_AT``: the listener of this external id writes ``<log>.hung`` and hangs (the test
  kills the process then); unset in the recovering run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from providers.synthetic import SyntheticItem
from tests.support.subprocess_app import synthetic_defs


def deliver(event: SyntheticItem) -> None:
    log = Path(os.environ["DEAD_APP_LOG"])
    if event.external_id == os.environ.get("DEAD_APP_HANG_AT"):
        Path(f"{log}.hung").write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    with log.open("a") as fh:
        fh.write(event.external_id + "\n")


defs = synthetic_defs(deliver)
