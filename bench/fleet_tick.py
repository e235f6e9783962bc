"""What one tick of the sync sensor costs per sync it requests (issue 11 point 1: the sensor runs in the
daemon's code server, so its CPU counts in bench/fleet.py's measure).

    flock /tmp/bench.lock .venv/bin/python bench/fleet_tick.py --storage postgres [--m 2000] [--due 500]
        [--ticks 5] [--db-prefix hfleet_tick]

Seeds ``--m`` small integrations of ``bench/fleet_app.py`` (one earlier sync each, as ``bench/fleet.py``),
their partitions on a fresh Dagster instance (``--storage postgres``: dagster-postgres, as bench/fleet.py;
``sqlite``: Dagster's default storage), then per tick makes ``--due`` of them due and evaluates the
provider's sync sensor once in this process (``build_sensor_context`` + ``evaluate_tick``, as the code
server does for the daemon), measuring this process's CPU (``time.process_time``), the wall time and
the statements on each database; ``--due`` at 500 is one 30-second tick of the 1,000-syncs-a-minute
target. Launching the requested runs (the daemon's share) is not included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, update  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench._common import drop_database, fresh_database, print_table  # noqa: E402
from bench.fleet import dagster_yaml, seed  # noqa: E402

COUNTS: Counter[str] = Counter()
NAMES = {"state": "", "dagster": ""}


@event.listens_for(Engine, "before_cursor_execute")
def _count_sql(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
    try:
        url = str(conn.engine.url)
    except Exception:
        url = ""
    COUNTS["sql_state" if NAMES["state"] and NAMES["state"] in url else "sql_dagster"] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--due", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--db-prefix", default="hfleet_tick")
    args = ap.parse_args()
    state_db, dagster_db = f"{args.db_prefix}_state", f"{args.db_prefix}_dagster"
    NAMES["state"] = state_db
    state_url = fresh_database(state_db)
    if args.storage == "postgres":
        fresh_database(dagster_db)
    home = Path(tempfile.mkdtemp(prefix=f"{args.db_prefix}-"))
    (home / "dagster.yaml").write_text(dagster_yaml(args.storage, dagster_db))
    os.environ.update(DAGSTER_HOME=str(home), INTEGRATIONS_DATABASE_URL=state_url, DAGSTER_DISABLE_TELEMETRY="yes")

    from dagster import AddDynamicPartitionsRequest, DagsterInstance, build_sensor_context

    from bench import fleet_app
    from integrations_dagster import Store
    from integrations_dagster.store import models as m

    store = Store.for_url(state_url)
    now = datetime.now(UTC)
    ids = seed(store, args.m, 2, 2.5, time.time() - 3600, now)
    instance = DagsterInstance.get()
    defs = fleet_app.defs
    sensor = defs.resolve_sensor_def("fleet_sync_sensor")
    rows = []
    cursor = None
    for k in range(args.ticks + 1):  # the first tick adds the partitions and warms up
        due_at = datetime.now(UTC) - timedelta(seconds=1)
        later = datetime.now(UTC) + timedelta(hours=1)
        with store.begin() as conn:  # --due integrations due now, the others an hour away
            conn.execute(update(m.integrations).values(next_sync_at=later))
            conn.execute(update(m.integrations).where(m.integrations.c.id.in_(ids[:args.due]))
                         .values(next_sync_at=due_at))
        context = build_sensor_context(instance=instance, definitions=defs, cursor=cursor, resources=defs.resources)
        COUNTS.clear()
        cpu0, w0 = time.process_time(), time.perf_counter()
        result = sensor.evaluate_tick(context)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - w0
        for req in result.dynamic_partitions_requests or []:
            if isinstance(req, AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        requested = sum(len(r.run_config["ops"]["fleet_batch_plan"]["config"]["integration_ids"])
                        if r.job_name == "fleet_sync_batch" else 1 for r in result.run_requests or [])
        cursor = result.cursor
        if k == 0:
            continue
        rows.append({"tick": k, "integrations": args.m, "requested": requested, "runs": len(result.run_requests or []),
                     "cpu_s": round(cpu, 4), "wall_s": round(wall, 3),
                     "cpu_s_per_sync": round(cpu / max(requested, 1), 5),
                     "sql_state": COUNTS["sql_state"], "sql_dagster": COUNTS["sql_dagster"]})
    print_table(["tick", "integrations", "syncs requested", "runs", "CPU-s", "wall s", "CPU-s/sync", "SQL state",
                 "SQL Dagster"],
                [[r["tick"], r["integrations"], r["requested"], r["runs"], r["cpu_s"], r["wall_s"], r["cpu_s_per_sync"],
                  r["sql_state"], r["sql_dagster"]] for r in rows])
    Store.forget_all()
    drop_database(state_db)
    if args.storage == "postgres":
        drop_database(dagster_db)
    out: dict[str, Any] = {"storage": args.storage, "m": args.m, "due": args.due, "rows": rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
