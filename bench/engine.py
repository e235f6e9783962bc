"""Engine benchmark: items/s and peak RSS through the real Dagster sync job, against a hand-written loop.

    .venv/bin/python bench/engine.py                 # 1,000, 10,000 and 100,000 items
    .venv/bin/python bench/engine.py --sizes 1000,10000

Each scenario runs in its own process (so peak RSS is its own) against a scratch PostgreSQL database
(``bench_engine``). The listener upserts one row per item into PostgreSQL in its own transaction;
the hand-written loop does the same enumerate + listener + upsert with no tracking at all. For
1,000 items it also runs one mapped Dagster step per item (chunk_size=1), the design we avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import drop_database, fresh_database, peak_rss_mb, print_table, run_child  # noqa: E402

DB = "bench_engine"


def _sink_engine(url: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_sink (k text PRIMARY KEY, v text NOT NULL)"))
        conn.execute(text("TRUNCATE bench_sink"))
    return engine


UPSERT = "INSERT INTO bench_sink (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"


def make_defs(database_url: str, chunk_size: int = 1000):  # type: ignore[no-untyped-def]
    """Definitions for the framework scenario (reconstructable by Dagster)."""
    from sqlalchemy import text

    from integrations_dagster import SyncSettings, build_definitions
    from providers.synthetic import SyntheticItem, SyntheticProvider

    sink = _sink_engine(database_url)
    stmt = text(UPSERT)

    def upsert(event: SyntheticItem) -> None:
        with sink.begin() as conn:
            conn.execute(stmt, {"k": event.external_id, "v": event.value})

    return build_definitions(
        providers=[SyntheticProvider()],
        listeners=[(SyntheticItem, upsert)],
        settings=SyncSettings(database_url=database_url, chunk_size=chunk_size, max_items_per_batch=10**9),
        sensors=False,
        operator_jobs=False,
    )


def child_framework(url: str, items: int, chunk_size: int) -> dict:
    from dagster import DagsterInstance

    from integrations_dagster import DefinitionsRef, Store, execute_sync

    store = Store.for_url(url)
    integ = store.create_integration(provider_key="synthetic", name="bench", metadata={"items": items})
    ref = DefinitionsRef("bench.engine", "make_defs", {"database_url": url, "chunk_size": chunk_size})
    ref.load()  # import cost outside the timing, like the loop's imports
    with tempfile.TemporaryDirectory() as home:
        os.environ["DAGSTER_HOME"] = home
        with DagsterInstance.get() as instance:
            t0 = time.perf_counter()
            run = execute_sync(ref, "synthetic", integ.id, instance=instance, log_level="ERROR")
            seconds = time.perf_counter() - t0
    sr = store.runs_for_integration(integ.id, limit=1)[0]
    assert run.status.value == "SUCCESS" and sr["success_count"] == items, (run.status, sr)
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


def child_loop(url: str, items: int) -> dict:
    from sqlalchemy import text

    from integrations_dagster import Integration
    from providers.synthetic import SyntheticItem, checkpoint_for

    sink = _sink_engine(url)
    stmt = text(UPSERT)
    integ = Integration(id=1, provider_key="synthetic", name="bench", metadata={"items": items})
    t0 = time.perf_counter()
    cursor = None
    for i in range(items):  # enumerate + listener + upsert, no tracking
        event = SyntheticItem(integration_id=integ.id, index=i, external_id=f"item-{i}", value=f"value {i}")
        with sink.begin() as conn:
            conn.execute(stmt, {"k": event.external_id, "v": event.value})
        cursor = checkpoint_for(i)
    seconds = time.perf_counter() - t0
    assert cursor is not None
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        kind, url, items, *rest = args.child
        out = child_framework(url, int(items), int(rest[0])) if kind == "framework" else child_loop(url, int(items))
        print(json.dumps(out))
        return
    url = fresh_database(DB)
    rows = []
    results: dict = {}
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            loop = run_child(__file__, "loop", url, str(n))
            url = fresh_database(DB)
            fw = run_child(__file__, "framework", url, str(n), "1000")
            url = fresh_database(DB)
            results[n] = (fw, loop)
            rows.append([f"{n:,}", "framework (chunks of 1,000)", f"{fw['seconds']:.2f}", f"{n / fw['seconds']:,.0f}",
                         f"{fw['rss_mb']:.0f}", f"{fw['seconds'] / loop['seconds']:.2f}x"])
            rows.append([f"{n:,}", "hand-written loop", f"{loop['seconds']:.2f}", f"{n / loop['seconds']:,.0f}",
                         f"{loop['rss_mb']:.0f}", "1.00x"])
            if n == 1000:
                per_item = run_child(__file__, "framework", url, str(n), "1")
                url = fresh_database(DB)
                rows.append([f"{n:,}", "one mapped step per item", f"{per_item['seconds']:.2f}",
                             f"{n / per_item['seconds']:,.0f}", f"{per_item['rss_mb']:.0f}",
                             f"{per_item['seconds'] / loop['seconds']:.2f}x"])
    finally:
        drop_database(DB)
    print_table(["items", "scenario", "wall s", "items/s", "peak RSS MB", "vs loop"], rows)
    sizes = sorted(results)
    if 10000 in results and 100000 in results:
        ratio = results[100000][0]["rss_mb"] / results[10000][0]["rss_mb"]
        print(f"\npeak RSS 100k / 10k (framework): {ratio:.2f}x (target <= 1.2x)")
        print(f"wall time at 100k vs loop: {results[100000][0]['seconds'] / results[100000][1]['seconds']:.2f}x "
              "(target <= 1.5x)")
    del sizes


if __name__ == "__main__":
    main()
