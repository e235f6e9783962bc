"""A worker process for tests/reliability/test_two_workers.py (PostgreSQL).

``python -m tests.support.two_workers DB_URL INTEGRATION_ID ACTION LOG GO``: waits for the file GO
(so both workers start together), then ``start`` (start_run; prints the run id or "skipped") or
``chunk RUN CHUNK`` (process_chunk; every delivery appends "pid external_id start end" to LOG).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from integrations_dagster import SyncSettings
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.store import Store
from providers.synthetic import SyntheticItem, SyntheticProvider


def main() -> None:
    url, integration_id, action, log, go = sys.argv[1:6]

    def deliver(event: SyntheticItem) -> None:
        begin = time.time()
        time.sleep(0.01)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {event.external_id} {begin} {time.time()}\n")

    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry.build([(SyntheticItem, deliver)]),
                        settings=SyncSettings(database_url=None, chunk_size=20, item_tries=1))
    store = Store.for_url(url)
    while not Path(go).exists():
        time.sleep(0.005)
    if action == "start":
        res = engine.start_run(store, int(integration_id), dagster_run_id=None, is_run_alive=lambda _id: True)
        print("skipped" if res.skipped else res.run_id)
    else:
        engine.process_chunk(store, int(sys.argv[6]), int(sys.argv[7]))


if __name__ == "__main__":
    main()
