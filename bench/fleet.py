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
    """Our ``dagster.yaml``; for ``postgres`` its ``storage`` block replaced by dagster-postgres's."""
    import yaml

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    if storage == "postgres":
        config["storage"] = {"postgres": {"postgres_db": {
            "username": "postgres", "password": "", "hostname": PG_HOST, "db_name": dagster_db, "port": 5432,
            # SQLAlchemy 2.1's default postgresql:// driver is psycopg 3, which dagster-postgres's SQL
            # does not work with (DAGSTER-NOTES): Dagster's storage goes through psycopg2.
            "scheme": "postgresql+psycopg2"}}}
    return str(yaml.safe_dump(config, sort_keys=False))


TCK = os.sysconf("SC_CLK_TCK")


def _kind(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "dagster-daemon" in text:
        return "daemon"
    if " api grpc" in text:
        return "code_server"
    if "spawn_main" in text or " api execute_run" in text:
        return "run_workers"
    return "other"


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of the fleet, by process kind, sampled every ``period`` seconds.

    - the daemon and every process under it (``psutil``). The total is exact: the daemon's own and
      reaped-children times (``dagster-daemon`` starts a fresh code server every 60 s, its
      ``RELOAD_WORKSPACE_INTERVAL``, and reaps the old one, whose own reaped children are the run workers
      it started) plus every live descendant's own and reaped-children times. The split: ``daemon`` its
      own, ``code_server`` each code server's own (the last sample of one that exited), ``run_workers``
      the rest (the run workers, the code servers' ``spawn`` children, live or reaped);
    - the PostgreSQL backends serving this phase's databases (their process title names the database:
      ``postgres: 15/main: postgres DB ...``, read from /proc): the last sample of each backend is kept
      after it exits, so a backend loses at most its last ``period`` of CPU, and a connection that lives
      less than ``period`` may be missed whole (dagster-postgres's per-event connections without a pool,
      i.e. the baseline's run workers and the daemon; a batch run pools them: docs/SCHEDULING.md).
      ``postgres_server_total`` is the whole server's CPU (every backend of every database, reaped ones
      included, and the background writers): an upper bound, other engineers' work on the shared server
      is in it.
    """

    def __init__(self, pid: int, databases: list[str], period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.period = period
        self.dbs = [f" {d} ".encode() for d in databases]
        self.kinds: dict[int, str] = {}
        self.code_servers: dict[int, float] = {}  # pid -> own CPU, last sample
        self.daemon_total = 0.0  # own + reaped children
        self.daemon_own = 0.0
        self.live: dict[int, tuple[str, float]] = {}
        self.pg: dict[int, float] = {}
        self.procs: dict[int, psutil.Process] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_run_workers = 0

    def totals(self) -> dict[str, float]:
        with self.lock:
            self._sample()
            total = self.daemon_total + sum(cpu for _, cpu in self.live.values())
            code = sum(self.code_servers.values())
            other = sum(cpu for kind, cpu in self.live.values() if kind == "other")
            return {"daemon": self.daemon_own, "code_server": code, "other": other,
                    "run_workers": total - self.daemon_own - code - other, "fleet_total": total,
                    "postgres_backends": sum(self.pg.values()), "postgres_server_total": postgres_server_cpu()}

    def _sample(self) -> None:
        try:
            procs = self.root.children(recursive=True)
            t = self.root.cpu_times()
            self.daemon_own = t.user + t.system
            self.daemon_total = self.daemon_own + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            procs = []
        workers = 0
        live: dict[int, tuple[str, float]] = {}
        for p in procs:
            p = self.procs.setdefault(p.pid, p)
            try:
                kind = self.kinds.get(p.pid) or self.kinds.setdefault(p.pid, _kind(p.cmdline()))
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            live[p.pid] = (kind, t.user + t.system + t.children_user + t.children_system)
            if kind == "code_server":
                self.code_servers[p.pid] = t.user + t.system
            workers += kind == "run_workers"
        self.live = live
        self.max_run_workers = max(self.max_run_workers, workers)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    cmd = fh.read()
                if not cmd.startswith(b"postgres:") or not any(d in cmd for d in self.dbs):
                    continue
                with open(f"/proc/{name}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                self.pg[int(name)] = (int(f[11]) + int(f[12])) / TCK
            except OSError:
                continue

    def run(self) -> None:
        while not self.stop.wait(self.period):
            with self.lock:
                self._sample()


def postgres_server_cpu() -> float:
    """CPU seconds of the whole PostgreSQL server so far (postmaster, live children, reaped ones)."""
    total = 0.0
    for p in psutil.process_iter(["name", "ppid"]):
        try:
            if p.info["name"] not in ("postgres", "postmaster"):
                continue
            t = p.cpu_times()
            parent = p.parent()
            if parent is None or parent.name() not in ("postgres", "postmaster"):
                total += t.user + t.system + t.children_user + t.children_system
            else:
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


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


def pct(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of an ascending list."""
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def lag_figures(store: Store, ids: list[int], start: datetime, end: datetime, interval: int) -> dict[str, Any]:
    """Per integration, the longest stretch without a successful sync in the window (from its last
    success before the window to its first inside, between successes, from its last to the window's
    end) minus its interval; percentiles over the integrations."""
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
        gap = max((b - a).total_seconds() for a, b in zip(points, points[1:], strict=False))
        lags.append(gap - interval * 60.0)
    lags.sort()
    return {"worst_lag_s": round(lags[-1], 1), "p95_lag_s": round(pct(lags, 0.95), 1),
            "p50_lag_s": round(pct(lags, 0.50), 1),
            "late_integrations": sum(1 for x in lags if x > interval * 60.0)}


def settled_syncs(store: Store, start: datetime, end: datetime) -> tuple[dict[str, int], list[int]]:
    """Sync runs that finished inside [start, end) by status, and settled ones per whole minute."""
    sr = m.sync_runs
    statuses: dict[str, int] = defaultdict(int)
    minutes = [0] * max(1, int((end - start).total_seconds() // 60))
    with store.engine.connect() as conn:
        for r in conn.execute(select(sr.c.status, sr.c.finished_at).where(
                sr.c.finished_at >= start, sr.c.finished_at < end, sr.c.trigger != "seed")):
            statuses[r.status] += 1
            f = r.finished_at if r.finished_at.tzinfo else r.finished_at.replace(tzinfo=UTC)
            k = int((f - start).total_seconds() // 60)
            if r.status in SETTLED and k < len(minutes):
                minutes[k] += 1
    return dict(statuses), minutes


def stop_fleet(daemon: subprocess.Popen[bytes], sampler: CpuSampler, drain: float) -> dict[str, Any]:
    """Stop the daemon (SIGTERM to it alone: it stops ticking and launching), then let the run workers it
    launched finish (up to ``drain`` seconds) before killing what is left of its process group.

    A SIGTERM to the whole group (what this benchmark did before) reaches the run workers too: Dagster's
    run worker maps SIGTERM to an interrupt and ends its run FAILURE ("Execution was interrupted
    unexpectedly"), which is the benchmark's teardown, not a failed sync (docs/BENCHMARKS.md, Fleet)."""
    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    left = 0
    while time.monotonic() - t0 < drain:
        left = sum(1 for p in psutil.process_iter(["cmdline"]) if _is_run_worker_of(p, daemon.pid))
        if left == 0:
            break
        time.sleep(1.0)
    sampler.stop.set()
    try:
        os.killpg(daemon.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"teardown_s": round(time.monotonic() - t0, 1), "run_workers_killed": left}


def _is_run_worker_of(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid and _kind(p.info["cmdline"] or []) == "run_workers"
    except (ProcessLookupError, PermissionError):
        return False


def phase(name: str, *, storage: str, m_count: int, interval: int, batch_size: int, warmup: float, window: float,
          rate: float, keep: bool, db_prefix: str = "hfleet", drain: float = 120) -> dict[str, Any]:
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
    sampler = CpuSampler(daemon.pid, [d for d in (state_db, dagster_db) if d])
    sampler.start()
    try:
        time.sleep(warmup)
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited: see {home / 'daemon.log'}")
        cpu0, t_start = sampler.totals(), datetime.now(UTC)
        time.sleep(window)
        cpu1, t_end = sampler.totals(), datetime.now(UTC)
        at_end = dagster_runs(env, t_start, t_end)
        teardown = stop_fleet(daemon, sampler, drain)
    finally:
        sampler.stop.set()
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        daemon_log.close()
    statuses, per_minute = settled_syncs(store, t_start, t_end)
    syncs = sum(statuses.get(s, 0) for s in SETTLED)
    seconds = (t_end - t_start).total_seconds()
    cpu = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 1) for k in sorted(set(cpu0) | set(cpu1))}
    fleet_cpu = cpu["fleet_total"]
    with_pg = fleet_cpu + cpu.get("postgres_backends", 0.0)
    after = dagster_runs(env, t_start, t_end)
    out = {
        "phase": name, "storage": storage, "integrations": m_count, "interval_min": interval,
        "batch_size": batch_size, "window_s": round(seconds), "warmup_s": warmup,
        "demand_per_min": round(m_count / interval, 1), "syncs": syncs,
        "syncs_per_min": round(syncs / (seconds / 60.0), 1), "statuses": statuses,
        "per_minute": per_minute, "cpu_s": cpu,
        "cpu_s_per_sync": round(fleet_cpu / syncs, 3) if syncs else None,
        "cpu_s_per_sync_with_pg": round(with_pg / syncs, 3) if syncs else None,
        "cores_busy": round(fleet_cpu / seconds, 2), "cores_busy_with_pg": round(with_pg / seconds, 2),
        "max_run_workers": sampler.max_run_workers,
        **lag_figures(store, ids, t_start, t_end, interval),
        "dagster_runs_at_window_end": at_end["counts"], "dagster_runs": after["counts"],
        "failed_dagster_runs": after["failed"], **teardown,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
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


_RUNS_CODE = """
import json, sys
from datetime import datetime
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
inst = DagsterInstance.get()
start, end = (datetime.fromisoformat(a) for a in sys.argv[1:3])
counts, failed = {}, []
for r in inst.get_runs(RunsFilter(created_after=start, created_before=end)):
    k = f"{r.job_name}:{r.status.value}"
    counts[k] = counts.get(k, 0) + 1
    if r.status == DagsterRunStatus.FAILURE and len(failed) < 20:
        why = [e.user_message or (e.dagster_event.message if e.dagster_event else "")
               for e in inst.all_logs(r.run_id)
               if e.dagster_event and e.dagster_event.event_type in (
                   DagsterEventType.RUN_FAILURE, DagsterEventType.STEP_FAILURE, DagsterEventType.ENGINE_EVENT)
               and e.level >= 30]
        failed.append({"run_id": r.run_id, "job": r.job_name, "tags": {k: v for k, v in r.tags.items()
                       if k.startswith("integrations/") or k == "dagster/partition"}, "why": [w[:400] for w in why]})
print(json.dumps({"counts": counts, "failed": failed}))
"""


def dagster_runs(env: dict[str, str], start: datetime, end: datetime) -> dict[str, Any]:
    """Dagster runs created during the window, by job and status, and each failed one's failure events
    (read in a child with the phase's ``DAGSTER_HOME``)."""
    proc = subprocess.run([sys.executable, "-c", _RUNS_CODE, start.isoformat(), end.isoformat()], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        return {"counts": {"error": proc.stderr[-300:]}, "failed": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--interval", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.5, help="new items per integration per minute")
    ap.add_argument("--warmup", type=float, default=120)
    ap.add_argument("--window", type=float, default=600)
    ap.add_argument("--baseline-m", type=int, default=40)
    ap.add_argument("--baseline-interval", type=int, default=1)
    ap.add_argument("--baseline-window", type=float, default=180)
    ap.add_argument("--baseline-warmup", type=float, default=60)
    ap.add_argument("--drain", type=float, default=120,
                    help="seconds to let launched runs finish after the daemon stops, before killing them")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep each phase's DAGSTER_HOME (logs) and print it")
    ap.add_argument("--db-prefix", default="hfleet", help="scratch databases PREFIX_state_* and PREFIX_dagster_*")
    args = ap.parse_args()
    results = []
    if not args.skip_batch:
        results.append(phase("batch", storage=args.storage, m_count=args.m, interval=args.interval,
                             batch_size=args.batch_size, warmup=args.warmup, window=args.window, rate=args.rate,
                             keep=args.keep, db_prefix=args.db_prefix, drain=args.drain))
    if not args.skip_baseline:
        results.append(phase("baseline", storage=args.storage, m_count=args.baseline_m,
                             interval=args.baseline_interval, batch_size=0, warmup=args.baseline_warmup,
                             window=args.baseline_window, rate=args.rate, keep=args.keep, db_prefix=args.db_prefix,
                             drain=args.drain))
    print()
    print_table(
        ["phase", "Dagster storage", "integrations", "interval", "demand/min", "syncs/min", "per minute (min-max)",
         "CPU-s/sync", "+ PostgreSQL", "cores busy", "lag p50", "lag p95", "lag max", "failed runs", "window"],
        [[r["phase"] + (f" ({r['batch_size']}/run)" if r["batch_size"] else " (1 run/sync)"), r["storage"],
          r["integrations"], f"{r['interval_min']} min", r["demand_per_min"], r["syncs_per_min"],
          f"{min(r['per_minute'])}-{max(r['per_minute'])}", r["cpu_s_per_sync"], r["cpu_s_per_sync_with_pg"],
          r["cores_busy_with_pg"], f"{r['p50_lag_s']} s", f"{r['p95_lag_s']} s", f"{r['worst_lag_s']} s",
          len(r["failed_dagster_runs"]), f"{r['window_s']} s"] for r in results],
    )
    for r in results:
        print(f"\n{r['phase']}: CPU-s in the window by process: {r['cpu_s']}; Dagster runs created in the window: "
              f"{r['dagster_runs']} (at the window's end: {r['dagster_runs_at_window_end']})")
        for f in r["failed_dagster_runs"]:
            print(f"  FAILED {f['job']} {f['run_id']} {f['tags']}: {f['why']}")
    if len(results) == 2 and results[0]["cpu_s_per_sync"] and results[1]["cpu_s_per_sync"]:
        print(f"\nCPU per sync, baseline / batch: {results[1]['cpu_s_per_sync'] / results[0]['cpu_s_per_sync']:.0f}x")
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
