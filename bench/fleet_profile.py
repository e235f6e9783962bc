"""Where the CPU of one ``fleet_sync_batch`` run goes (issue 11 point 1), in this process.

    flock /tmp/bench.lock .venv/bin/python bench/fleet_profile.py --storage postgres [--n 200] [--runs 2]
        [--profile out.prof]

Seeds ``--n`` small integrations of ``bench/fleet_app.py``'s ``fleet`` provider (one earlier sync each,
about 5 new items waiting), then executes ``fleet_sync_batch`` runs over all of them with
``execute_job`` and the in-process executor on a fresh Dagster instance (``--storage postgres``:
dagster-postgres, as ``bench/fleet.py``; ``sqlite``: Dagster's default storage) - what a run worker
does after its imports. The first run warms the process up (imports, caches); the next ``--runs``
are measured:

- **CPU-s per sync** of this process (``time.process_time``: every thread, robust to the shared
  machine's noise) and of the PostgreSQL server (the postmaster's reaped children plus live
  backends, from ``/proc``: dagster-postgres opens a connection per event write);
- **SQL statements and connections per sync**, split into our state store's and Dagster's storage
  (SQLAlchemy ``before_cursor_execute`` / pool ``connect`` events on every engine);
- **Dagster events per sync** (by type) in the run's event log;
- with ``--profile FILE``: a cProfile of the last run, and the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import Pool  # noqa: E402

from bench._common import drop_database, fresh_database, print_table  # noqa: E402
from bench.fleet import dagster_yaml, seed  # noqa: E402

COUNTS: Counter[str] = Counter()
#: state statements by their text's first words (``--sql-top``)
STATEMENTS: Counter[str] = Counter()
STATE_DB = "hfleet_prof_state"
DAGSTER_DB = "hfleet_prof_dagster"


def _which(conn: Any) -> str:
    try:
        url = str(conn.engine.url)
    except Exception:
        return "other"
    return "state" if STATE_DB in url else "dagster"


@event.listens_for(Engine, "before_cursor_execute")
def _count_sql(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
    which = _which(conn)
    COUNTS[f"sql_{which}"] += 1
    if which == "state":
        STATEMENTS[" ".join(statement.split())[:110]] += 1


@event.listens_for(Pool, "connect")
def _count_connect(dbapi_conn, record):  # type: ignore[no-untyped-def]
    COUNTS["connects"] += 1


@event.listens_for(Pool, "checkout")
def _count_checkout(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
    # a checkout of the state store's pool costs a round trip of its own (``pool_pre_ping``)
    COUNTS["checkouts"] += 1


@event.listens_for(Engine, "begin")
def _count_begin(conn):  # type: ignore[no-untyped-def]
    COUNTS[f"tx_{_which(conn)}"] += 1


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live children and (through the
    postmaster's reaped-children times) the exited ones."""
    total = 0.0
    for p in psutil.process_iter(["name", "ppid"]):
        try:
            if p.info["name"] not in ("postgres", "postmaster"):
                continue
            t = p.cpu_times()
            if p.info["ppid"] == 1 or p.parent() is None or p.parent().name() not in ("postgres", "postmaster"):
                total += t.user + t.system + t.children_user + t.children_system
            else:
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--rate", type=float, default=2.5)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sql-top", type=int, default=0, help="print the N most frequent state statements (last run)")
    ap.add_argument("--db-prefix", default="hfleet_prof",
                    help="scratch database names: PREFIX_state and PREFIX_dagster (dropped at the end)")
    ap.add_argument("--variants", default="as-is",
                    help="comma-separated, measured in turn: as-is, pool (instance.optimize_for_webserver), "
                         "quiet (console logger at WARNING), pool+quiet")
    args = ap.parse_args()
    global STATE_DB, DAGSTER_DB
    STATE_DB, DAGSTER_DB = f"{args.db_prefix}_state", f"{args.db_prefix}_dagster"

    state_url = fresh_database(STATE_DB)
    if args.storage == "postgres":
        fresh_database(DAGSTER_DB)
    home = Path(tempfile.mkdtemp(prefix=f"{args.db_prefix}-"))
    (home / "dagster.yaml").write_text(dagster_yaml(args.storage, DAGSTER_DB))
    os.environ.update(DAGSTER_HOME=str(home), INTEGRATIONS_DATABASE_URL=state_url, DAGSTER_DISABLE_TELEMETRY="yes")

    from dagster import DagsterInstance, execute_job, reconstructable

    from bench import fleet_app
    from integrations_dagster import Store
    from integrations_dagster.orchestration.batch import batch_run_config
    from integrations_dagster.orchestration.in_process import ensure_partition

    store = Store.for_url(state_url)
    dialect = store.engine.dialect
    real_ping = dialect.do_ping

    def counting_ping(dbapi_conn):  # type: ignore[no-untyped-def]
        COUNTS["pings"] += 1  # the pool's liveness round trip (pool_pre_ping or the idle check)
        return real_ping(dbapi_conn)

    dialect.do_ping = counting_ping  # type: ignore[method-assign]
    t0 = time.time() - 3600
    ids = seed(store, args.n, 2, args.rate, t0, datetime.now(UTC))
    instance = DagsterInstance.get()
    for iid in ids:
        ensure_partition(instance, "fleet", iid)
    job = reconstructable(fleet_app.batch_job)

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    def one_run(variant: str = "as-is") -> Any:
        # each run finds ~`rate` x 2 new items per integration: move every integration's API 2 minutes on
        nonlocal t0
        t0 -= 120
        with store.begin() as conn:
            from sqlalchemy import update

            from integrations_dagster.store import models as m
            conn.execute(update(m.integrations).values(metadata={"rate": args.rate, "t0": t0}))
        config = batch_run_config("fleet", ids)
        if "quiet" in variant:
            config = {**config, **quiet}
        if "pool" in variant:
            instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        return execute_job(job, instance=instance, run_config=config,
                           tags={"integrations/provider": "fleet", "integrations/trigger": "schedule"})

    warm = one_run()
    assert warm.success, "warm-up run failed"
    rows = []
    prof = cProfile.Profile(time.process_time) if args.profile else None  # CPU time, not wall
    plan = [(v, k) for v in args.variants.split(",") for k in range(args.runs)]
    for v, k in plan:
        COUNTS.clear()
        STATEMENTS.clear()
        pg0, cpu0, w0 = postgres_cpu(), time.process_time(), time.perf_counter()
        if prof is not None and (v, k) == plan[-1]:
            prof.enable()
        res = one_run(v)
        if prof is not None and (v, k) == plan[-1]:
            prof.disable()
        cpu, wall, pg = time.process_time() - cpu0, time.perf_counter() - w0, postgres_cpu() - pg0
        assert res.success, "measured run failed"
        events = Counter(e.dagster_event.event_type_value if e.dagster_event else "log_message"
                         for e in instance.all_logs(res.run_id))
        n = len(ids)
        rows.append({
            "run": f"{v} {k + 1}", "syncs": n, "cpu_s_per_sync": round(cpu / n, 4), "pg_cpu_s_per_sync": round(pg / n, 4),
            "wall_s": round(wall, 1), "sql_state_per_sync": round(COUNTS["sql_state"] / n, 1),
            "sql_dagster_per_sync": round(COUNTS["sql_dagster"] / n, 1),
            "connects_per_sync": round(COUNTS["connects"] / n, 1),
            "checkouts_per_sync": round(COUNTS["checkouts"] / n, 1),
            "pings_per_sync": round(COUNTS["pings"] / n, 2),
            "tx_state_per_sync": round(COUNTS["tx_state"] / n, 1),
            "events_per_sync": round(sum(events.values()) / n, 2),
            "events": dict(events),
        })
    print_table(["run", "syncs", "CPU-s/sync (this process)", "PG server CPU-s/sync", "wall", "SQL state/sync",
                 "SQL Dagster/sync", "connects/sync", "pool checkouts/sync", "pings/sync", "state transactions/sync", "events/sync"],
                [[r["run"], r["syncs"], r["cpu_s_per_sync"], r["pg_cpu_s_per_sync"], f"{r['wall_s']} s",
                  r["sql_state_per_sync"], r["sql_dagster_per_sync"], r["connects_per_sync"], r["checkouts_per_sync"], r["pings_per_sync"], r["tx_state_per_sync"],
                  r["events_per_sync"]]
                 for r in rows])
    print("events by type (last run):", json.dumps(rows[-1]["events"]))
    if args.sql_top:
        print("state statements per sync (last run):")
        for text, count in STATEMENTS.most_common(args.sql_top):
            print(f"  {count / len(ids):6.2f}  {text}")
    if prof is not None:
        prof.dump_stats(args.profile)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    Store.forget_all()
    drop_database(STATE_DB)
    if args.storage == "postgres":
        instance.dispose() if hasattr(instance, "dispose") else None
        drop_database(DAGSTER_DB)
    print(json.dumps({"storage": args.storage, "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
