"""Fleet benchmark: the real ``dagster-daemon`` keeping M small integrations current (issue 11 point 1).

    flock /tmp/bench.lock .venv/bin/python bench/fleet.py --storage postgres [--m 2000] [--interval 2]
        [--window 240] [--baseline-m 40] [--baseline-interval 1] [--baseline-window 120]

Two phases in one run, each with a fresh state database (PostgreSQL, ``hfleet_state_*``), a fresh
``DAGSTER_HOME`` with our ``dagster.yaml`` (run queue limits, run monitoring) plus, for
``--storage postgres``, Dagster's storage on PostgreSQL (dagster-postgres, ``hfleet_dagster_*``); with
``--storage sqlite`` Dagster's default SQLite storage under ``DAGSTER_HOME``:

1. **batch**: M integrations of the ``fleet`` provider (``bench/fleet_app.py``: about ``rate x interval``
   new items per sync, staged-SQL listener) at ``--interval`` minutes, each with one earlier sync (so
   they are small, not first syncs) and due times spread over one interval; the sync sensor shards due
   integrations into ``fleet_sync_batch`` runs (``INTEGRATIONS_BATCH_SIZE``, default 200);
2. **baseline**: ``--baseline-m`` integrations with batching off (``INTEGRATIONS_BATCH_SIZE=0``): one
   ``fleet_sync`` run per sync, as before batch runs.

Each phase starts ``dagster-daemon run`` (which starts the code server, which starts the run workers),
waits ``--warmup`` seconds, then measures a window of ``--window`` seconds:

- **syncs/min**: sync runs of the fleet that settled (success, partial or failed) inside the window;
- **CPU-s per sync**: CPU time (user + system) of the daemon and every process under it (code server, run
  workers; exited ones through their parent's reaped-children times), sampled with psutil every second,
  over the window, divided by the syncs. PostgreSQL's own server processes are not included;
- **lag**: per integration, the longest time it went without a successful sync during the window minus its
  interval (the window's edges count: the last sync before the window and the window's end). "No
  integration later than one interval" means worst lag <= interval. Reported: worst and 99th percentile.

Prints a Markdown table, and JSON with every figure as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from bench._common import drop_database, fresh_database, print_table  # noqa: E402
from integrations_dagster import Store  # noqa: E402
from integrations_dagster.store import models as m  # noqa: E402

PG_HOST = os.environ.get("INTEGRATIONS_BENCH_PG_HOST", "127.0.0.1")
SETTLED = ("success", "partial", "failed")


def dagster_yaml(storage: str, dagster_db: str | None) -> str:
    text = (ROOT / "dagster.yaml").read_text()
    if storage == "postgres":
        text += (
            "\nstorage:\n  postgres:\n    postgres_db:\n      username: postgres\n      password: \"\"\n"
            f"      hostname: {PG_HOST}\n      db_name: {dagster_db}\n      port: 5432\n"
            # SQLAlchemy 2.1's default postgresql:// driver is psycopg 3, which dagster-postgres's SQL
            # does not work with (DAGSTER-NOTES): Dagster's storage goes through psycopg2.
            "      scheme: postgresql+psycopg2\n"
        )
    return text


class CpuSampler(threading.Thread):
    """Sums user+system CPU (own and reaped children) of a process and all its live descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.last: dict[int, float] = {}
        self.procs: dict[int, psutil.Process] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_workers = 0

    def total(self) -> float:
        with self.lock:
            return self._sample()

    def _sample(self) -> float:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return sum(self.last.values())
        live: dict[int, float] = {}
        for p in procs:
            p = self.procs.setdefault(p.pid, p)
            try:
                t = p.cpu_times()
                live[p.pid] = t.user + t.system + t.children_user + t.children_system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        self.max_workers = max(self.max_workers, len(live))
        self.last = live
        return sum(live.values())

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.total()


def seed(store: Store, n: int, interval: int, rate: float, t0: float, now: datetime) -> list[int]:
    """``n`` integrations, each with one earlier successful sync (cursor at what its API has now), due
    times spread evenly over the next interval."""
    from bench.fleet_app import create_table

    create_table(store.engine)
    available = int((time.time() - t0) / 60.0 * rate)
    ids = []
    rows = []
    with store.begin() as conn:
        for k in range(n):
            iid = int(conn.execute(insert(m.integrations).values(
                tenant="default", provider_key="fleet", name=f"customer-{k}",
                metadata={"rate": rate, "t0": t0}, sync_interval_minutes=interval,
                cursor=f"{available - 1:010d}", enabled=True, health="healthy",
                consecutive_failures=0, consecutive_auth_failures=0, last_synced_at=now,
                next_sync_at=now + timedelta(seconds=interval * 60.0 * k / n),
                last_run_status="success", created_at=now, updated_at=now,
            ).returning(m.integrations.c.id)).scalar_one())
            ids.append(iid)
            rows.append(dict(integration_id=iid, dagster_run_id=None, status="success", trigger="seed",
                             cursor_before=None, cursor_after=f"{available - 1:010d}", items_total=5,
                             success_count=5, chunks=1, started_at=now - timedelta(seconds=interval * 60),
                             enumerated_at=now - timedelta(seconds=interval * 60), finished_at=now))
        conn.execute(insert(m.sync_runs), rows)
    return ids


def lag_figures(store: Store, ids: list[int], start: datetime, end: datetime, interval: int) -> dict[str, Any]:
    sr = m.sync_runs
    with store.engine.connect() as conn:
        rows = conn.execute(select(sr.c.integration_id, sr.c.finished_at).where(
            sr.c.integration_id.in_(ids), sr.c.status == "success", sr.c.finished_at.is_not(None),
            sr.c.finished_at <= end)).all()
    done: dict[int, list[datetime]] = defaultdict(list)
    for r in rows:
        f = r.finished_at if r.finished_at.tzinfo else r.finished_at.replace(tzinfo=UTC)
        done[int(r.integration_id)].append(f)
    lags = []
    for iid in ids:
        times = sorted(done.get(iid, []))
        before = [t for t in times if t < start]
        inside = [t for t in times if start <= t <= end]
        anchor = before[-1] if before else start
        points = [anchor] + inside + [end]
        gap = max((b - a).total_seconds() for a, b in zip(points, points[1:]))
        lags.append(gap - interval * 60.0)
    lags.sort()
    return {"worst_lag_s": round(lags[-1], 1), "p99_lag_s": round(lags[int(0.99 * (len(lags) - 1))], 1),
            "median_lag_s": round(statistics.median(lags), 1)}


def phase(name: str, *, storage: str, m_count: int, interval: int, batch_size: int, warmup: float, window: float,
          rate: float, keep: bool, db_prefix: str = "hfleet") -> dict[str, Any]:
    tag = f"{name}_{storage}"
    state_db = f"{db_prefix}_state_{tag}"
    dagster_db = f"{db_prefix}_dagster_{tag}" if storage == "postgres" else None
    state_url = fresh_database(state_db)
    if dagster_db:
        fresh_database(dagster_db)
    home = Path(tempfile.mkdtemp(prefix=f"hfleet-{tag}-"))
    (home / "dagster.yaml").write_text(dagster_yaml(storage, dagster_db))
    (home / "workspace.yaml").write_text(
        f"load_from:\n  - python_module:\n      module_name: bench.fleet_app\n      attribute: defs\n"
        f"      working_directory: {ROOT}\n")
    store = Store.for_url(state_url)
    t0 = time.time() - 3600
    now = datetime.now(UTC)
    ids = seed(store, m_count, interval, rate, t0, now)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "DAGSTER_DISABLE_TELEMETRY": "yes",
           "INTEGRATIONS_DATABASE_URL": state_url, "INTEGRATIONS_BATCH_SIZE": str(batch_size)}
    daemon_log = open(home / "daemon.log", "w")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(home / "workspace.yaml")], cwd=ROOT, env=env, stdout=daemon_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    sampler = CpuSampler(daemon.pid)
    sampler.start()
    try:
        time.sleep(warmup)
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited: see {home / 'daemon.log'}")
        cpu0, t_start = sampler.total(), datetime.now(UTC)
        time.sleep(window)
        cpu1, t_end = sampler.total(), datetime.now(UTC)
    finally:
        sampler.stop.set()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        time.sleep(1)
        try:
            os.killpg(daemon.pid, signal.SIGKILL)  # a lingering code server or run worker
        except ProcessLookupError:
            pass
        daemon_log.close()
    sr = m.sync_runs
    with store.engine.connect() as conn:
        statuses: dict[str, int] = defaultdict(int)
        for r in conn.execute(select(sr.c.status).where(sr.c.finished_at >= t_start, sr.c.finished_at < t_end,
                                                        sr.c.trigger != "seed")):
            statuses[r.status] += 1
    syncs = sum(statuses[s] for s in SETTLED)
    minutes = (t_end - t_start).total_seconds() / 60.0
    dagster_runs = dagster_run_counts(home, env, t_start, t_end)
    out = {
        "phase": name, "storage": storage, "integrations": m_count, "interval_min": interval,
        "batch_size": batch_size, "window_s": round((t_end - t_start).total_seconds()),
        "demand_per_min": round(m_count / interval, 1), "syncs": syncs,
        "syncs_per_min": round(syncs / minutes, 1), "statuses": dict(statuses),
        "cpu_s": round(cpu1 - cpu0, 1), "cpu_s_per_sync": round((cpu1 - cpu0) / syncs, 3) if syncs else None,
        "cores_busy": round((cpu1 - cpu0) / (t_end - t_start).total_seconds(), 2),
        **lag_figures(store, ids, t_start, t_end, interval), **dagster_runs,
    }
    Store.forget_all()
    drop_database(state_db)
    if dagster_db:
        drop_database(dagster_db)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    else:
        out["dagster_home"] = str(home)
    print(json.dumps(out), flush=True)
    return out


def dagster_run_counts(home: Path, env: dict[str, str], start: datetime, end: datetime) -> dict[str, Any]:
    """Dagster runs created during the window, by job and status (read in a child with the phase's home)."""
    code = (
        "import json,sys\nfrom datetime import datetime\nfrom dagster import DagsterInstance, RunsFilter\n"
        "inst = DagsterInstance.get()\nstart, end = (datetime.fromisoformat(a) for a in sys.argv[1:3])\n"
        "out = {}\nfor r in inst.get_runs(RunsFilter(created_after=start, created_before=end)):\n"
        "    k = f'{r.job_name}:{r.status.value}'\n    out[k] = out.get(k, 0) + 1\nprint(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, start.isoformat(), end.isoformat()], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    try:
        return {"dagster_runs": json.loads(proc.stdout.strip().splitlines()[-1])}
    except (IndexError, ValueError):
        return {"dagster_runs": {"error": proc.stderr[-300:]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--interval", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.5, help="new items per integration per minute")
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--window", type=float, default=240)
    ap.add_argument("--baseline-m", type=int, default=40)
    ap.add_argument("--baseline-interval", type=int, default=1)
    ap.add_argument("--baseline-window", type=float, default=120)
    ap.add_argument("--baseline-warmup", type=float, default=45)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep each phase's DAGSTER_HOME (logs) and print it")
    ap.add_argument("--db-prefix", default="hfleet", help="scratch databases PREFIX_state_* and PREFIX_dagster_*")
    args = ap.parse_args()
    results = []
    if not args.skip_batch:
        results.append(phase("batch", storage=args.storage, m_count=args.m, interval=args.interval,
                             batch_size=args.batch_size, warmup=args.warmup, window=args.window, rate=args.rate,
                             keep=args.keep, db_prefix=args.db_prefix))
    if not args.skip_baseline:
        results.append(phase("baseline", storage=args.storage, m_count=args.baseline_m,
                             interval=args.baseline_interval, batch_size=0, warmup=args.baseline_warmup,
                             window=args.baseline_window, rate=args.rate, keep=args.keep, db_prefix=args.db_prefix))
    print()
    print_table(
        ["phase", "Dagster storage", "integrations", "interval", "demand/min", "syncs/min", "CPU-s/sync",
         "cores busy", "worst lag", "p99 lag", "window"],
        [[r["phase"] + (f" ({r['batch_size']}/run)" if r["batch_size"] else " (1 run/sync)"), r["storage"],
          r["integrations"], f"{r['interval_min']} min", r["demand_per_min"], r["syncs_per_min"], r["cpu_s_per_sync"],
          r["cores_busy"], f"{r['worst_lag_s']} s", f"{r['p99_lag_s']} s", f"{r['window_s']} s"] for r in results],
    )
    if len(results) == 2 and results[0]["cpu_s_per_sync"] and results[1]["cpu_s_per_sync"]:
        print(f"\nCPU per sync, baseline / batch: {results[1]['cpu_s_per_sync'] / results[0]['cpu_s_per_sync']:.0f}x")
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
