"""Push benchmark (issue 13): mutations/s through ``push_pending`` (eligible query, HTTP batch to the fake
Tether server, one executemany of outcomes per batch), by ``push_batch_size``, SQLite and PostgreSQL.

    .venv/bin/python bench/push.py                       # 5,000 mutations, batch sizes 1, 50, 500, 3 repeats
    .venv/bin/python bench/push.py --mutations 2000 --batches 50,500

Each repeat records the mutations afresh (one transaction), then times only the push. The client is the
bundled one (``providers.tether.client``, stdlib HTTP); the server applies every mutation (no rejections).
Medians; the ratio is against batch size 1 (one request per mutation) in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import drop_database, fresh_database, print_table  # noqa: E402

DB = "bench_push"


def one(url: str, n: int, batch: int) -> float:
    from integrations_dagster import Outbox, Store
    from integrations_dagster.engine.push import push_pending
    from providers.tether import client
    from providers.tether.fake_server import TetherState, serve

    store = Store.for_url(url)
    integ = store.create_integration(provider_key="tether", name="bench")
    box = Outbox(store)
    with store.begin() as conn:
        for k in range(n):
            box.record(conn, integ.id, entity="task", key=k, operation="create", payload={"title": f"t{k}"})
    state = TetherState()
    srv = serve(state)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        started = time.perf_counter()
        res = push_pending(box, integ, lambda i, b: client.push(base, b), push_batch_size=batch)
        took = time.perf_counter() - started
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.pushed == n and state.applied_count == n, (res, state.applied_count)
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mutations", type=int, default=5000)
    ap.add_argument("--batches", default="1,50,500")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for db in ("sqlite", "postgres"):
        base_rate = None
        for batch in batches:
            times = []
            for _ in range(args.repeats):
                if db == "sqlite":
                    url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
                else:
                    url = fresh_database(DB)
                times.append(one(url, args.mutations, batch))
            med = statistics.median(times)
            rate = args.mutations / med
            base_rate = base_rate or rate
            rows.append([db, batch, args.mutations, f"{med:.2f}", f"{rate:,.0f}", f"{rate / base_rate:.1f}x"])
    drop_database(DB)
    print(print_table(["db", "push_batch_size", "mutations", "median s", "mutations/s", "vs batch 1"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
