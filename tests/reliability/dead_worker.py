"""Dead run worker (issue 9): how long until a SIGKILLed run worker is detected, and its integration
syncs again, with the real ``dagster-daemon`` and our ``dagster.yaml`` (run monitoring, run retries).

One trial:
1. a fresh integration of ``items`` synthetic items (each delivery sleeps ``delay`` s, so a run lasts
   long enough to be killed mid-way), due at once; the daemon's sensor launches its sync run;
2. as soon as the run worker has delivered a few items, SIGKILL that process (its pid is in the
   delivery log: ``tests/support/dead_worker_app.py``);
3. ``detect``: seconds from the kill until Dagster marks the run ``FAILURE`` (run monitoring);
4. ``resync``: seconds from the kill until a later sync run of the integration succeeded with the
   cursor at the provider maximum (the run retry, or the sensor's next launch, reclaims the dead sync
   run first); checks: every item delivered, cursor at the maximum.

Command (figures in docs/RELIABILITY.md)::

    nice -n 10 .venv/bin/python -m tests.reliability.dead_worker --db sqlite --trials 5
    nice -n 10 .venv/bin/python -m tests.reliability.dead_worker --db postgres --trials 5

``--poll`` overrides ``run_monitoring.poll_interval_seconds`` (the test uses a short one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.reliability.killsuite import fresh_database
from tests.support import open_instance

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DeadWorkerTrial:
    db: str
    poll_interval: int
    killed_pid: int = 0
    detect_seconds: float | None = None
    resync_seconds: float | None = None
    resynced_by: str = ""
    problems: list[str] = field(default_factory=list)
    #: What happened after the kill, for the record: each Dagster run of the integration (status, run
    #: failure reason, whether Dagster will retry it, retry number, parent) and each of our sync runs.
    dagster_runs: list[str] = field(default_factory=list)
    sync_runs: list[str] = field(default_factory=list)


def write_home(home: Path, poll_interval: int | None) -> None:
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    if poll_interval is not None:
        config["run_monitoring"]["poll_interval_seconds"] = poll_interval
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def write_workspace(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "tests.support.dead_worker_app", "attribute": "defs", "working_directory": str(ROOT)}}]}))
    return path


def _wait(predicate: Any, timeout: float, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


class Fleet:
    """A real dagster-daemon over a temporary DAGSTER_HOME and our workspace."""

    def __init__(self, db_url: str, workdir: Path, poll_interval: int | None, delay: float) -> None:
        self.home = workdir / "dagster_home"
        write_home(self.home, poll_interval)
        self.log = workdir / "delivered.txt"
        self.log.touch()
        ws = write_workspace(workdir / "workspace.yaml")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "INTEGRATIONS_DATABASE_URL": db_url,
               "DAGSTER_HOME": str(self.home), "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS": "1",
               "DAGSTER_DISABLE_TELEMETRY": "yes", "KILL_APP_LOG": str(self.log), "KILL_APP_DELAY": str(delay),
               "INTEGRATIONS_SENSOR_INTERVAL_SECONDS": "2"}
        env.pop("INTEGRATIONS_TENANT", None)
        self.daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ws)],
                                       env=env, cwd=str(workdir), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)

    def deliveries(self) -> list[tuple[int, str]]:
        out = []
        for line in self.log.read_text().splitlines():
            pid, _, ext = line.partition(" ")
            if ext:
                out.append((int(pid), ext))
        return out

    def close(self) -> None:
        try:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.daemon.pid, signal.SIGKILL)


def run_trial(fleet: Fleet, db_url: str, db: str, n: int, items: int, poll_interval: int,
              timeout: float) -> DeadWorkerTrial:
    from dagster import DagsterInstance, DagsterRunStatus

    from integrations_dagster.store import Store

    trial = DeadWorkerTrial(db=db, poll_interval=poll_interval)
    store = Store.for_url(db_url)
    integ = store.create_integration(provider_key="synthetic", name=f"dead-worker-{n}", metadata={"items": items},
                                     sync_interval_minutes=1)
    ours = {f"item-{i}" for i in range(items)}
    before = {pid for pid, ext in fleet.deliveries() if ext in ours}

    def worker_pid() -> int | None:
        pids = [pid for pid, ext in fleet.deliveries() if pid not in before]
        return pids[0] if len(pids) >= 3 else None

    pid = _wait(worker_pid, timeout)
    if not pid:
        trial.problems.append("the daemon never launched a sync that delivered items")
        return trial
    runs = store.runs_for_integration(integ.id, limit=1)
    dagster_run_id = runs[0]["dagster_run_id"] if runs else None
    killed_sync_run = runs[0]["id"] if runs else None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    trial.killed_pid = pid
    with DagsterInstance.from_ref(open_instance(str(fleet.home)).get_ref()) as instance:
        def failed() -> bool:
            run = instance.get_run_by_id(dagster_run_id) if dagster_run_id else None
            return run is not None and run.status == DagsterRunStatus.FAILURE

        if _wait(failed, timeout, step=0.5):
            trial.detect_seconds = round(time.monotonic() - killed_at, 1)
        else:
            trial.problems.append(f"Dagster run {dagster_run_id} was not marked FAILURE within {timeout:.0f} s")

        def resynced() -> bool:
            cursor = store.get_integration(integ.id).cursor
            latest = store.runs_for_integration(integ.id, limit=1)
            return cursor is not None and int(cursor) == items - 1 and bool(latest) \
                and latest[0]["status"] == "success"

        if _wait(resynced, timeout, step=0.5):
            trial.resync_seconds = round(time.monotonic() - killed_at, 1)
            # The dead run's own sync run finished: a re-execution of the killed Dagster run (the daemon's
            # run retry) completed it. A newer sync run: the sensor launched a new sync, which reclaimed it.
            latest = store.runs_for_integration(integ.id, limit=1)[0]
            trial.resynced_by = "run retry" if latest["id"] == killed_sync_run else "the sensor's next run"
        else:
            trial.problems.append(f"the integration did not sync to the maximum within {timeout:.0f} s of the kill")
        record_history(trial, instance, store, integ.id)
    delivered = {ext for _pid, ext in fleet.deliveries()}
    lost = sorted(ours - delivered)
    if lost:
        trial.problems.append(f"items never delivered: {lost[:5]}")
    return trial


def record_history(trial: DeadWorkerTrial, instance: Any, store: Any, integration_id: int) -> None:
    from dagster import RunsFilter

    ours = store.runs_for_integration(integration_id, limit=20)
    runs = {r.run_id: r for r in instance.get_runs(
        filters=RunsFilter(tags={"integrations/integration_id": str(integration_id)}))}
    for row in ours:  # a batch run carries no integration tag: take the runs our sync runs name, and their groups
        group = instance.get_run_group(row["dagster_run_id"]) if row["dagster_run_id"] else None
        for r in (group[1] if group else []):
            runs[r.run_id] = r
    for r in sorted(runs.values(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp):
        tags = r.tags
        trial.dagster_runs.append(
            f"{r.run_id[:8]} {r.job_name} {r.status.value} reason={tags.get('dagster/failure_reason', '-')} "
            f"will_retry={tags.get('dagster/will_retry', '-')} retry={tags.get('dagster/retry_number', '-')} "
            f"parent={(r.parent_run_id or '-')[:8]}")
    for row in reversed(ours):
        trial.sync_runs.append(f"{row['id']} {row['status']} dagster={(row['dagster_run_id'] or '-')[:8]} "
                               f"error={(row.get('error') or '')[:120]}")


def measure(db_url: str, db: str, trials: int, items: int, delay: float, poll_interval: int | None,
            timeout: float, workdir: Path, on_trial: Any = None) -> list[DeadWorkerTrial]:
    fleet = Fleet(db_url, workdir, poll_interval, delay)
    effective = poll_interval if poll_interval is not None else yaml.safe_load(
        (ROOT / "dagster.yaml").read_text())["run_monitoring"]["poll_interval_seconds"]
    results = []
    try:
        for n in range(trials):
            results.append(run_trial(fleet, db_url, db, n, items, effective, timeout))
            if on_trial is not None:
                on_trial(results[-1])
        return results
    finally:
        fleet.close()


def summary(results: list[DeadWorkerTrial]) -> str:
    lines = ["| DB | poll interval s | trials | problems | detect s (median / max) | sync again s (median / max) "
             "| synced again by |", "|---|---|---|---|---|---|---|"]
    by: dict[tuple[str, int], list[DeadWorkerTrial]] = {}
    for t in results:
        by.setdefault((t.db, t.poll_interval), []).append(t)
    for (db, poll), ts in sorted(by.items()):
        det = [t.detect_seconds for t in ts if t.detect_seconds is not None]
        res = [t.resync_seconds for t in ts if t.resync_seconds is not None]

        def fmt(xs: list[float]) -> str:
            return f"{statistics.median(xs):.1f} / {max(xs):.1f}" if xs else "-"

        lines.append(f"| {db} | {poll} | {len(ts)} | {sum(bool(t.problems) for t in ts)} | {fmt(det)} | {fmt(res)} "
                     f"| {', '.join(sorted({t.resynced_by for t in ts if t.resynced_by}))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/dead_worker")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--delay", type=float, default=0.5)
    ap.add_argument("--poll", type=int, default=None, help="override run_monitoring.poll_interval_seconds")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--out")
    ap.add_argument("--workdir", help="keep the daemon's files here (default: a temporary directory)")
    ap.add_argument("--table", nargs="*")
    args = ap.parse_args()
    if args.table is not None:
        rows = [DeadWorkerTrial(**json.loads(line)) for f in args.table for line in Path(f).read_text().splitlines()
                if line]
        print(summary(rows))
        return
    with tempfile.TemporaryDirectory(prefix="deadworker-") as tmp:
        if args.workdir:
            tmp = args.workdir
            Path(tmp).mkdir(parents=True, exist_ok=True)
        url = fresh_database(args.db, args.pg_url, Path(tmp))
        def report(t: DeadWorkerTrial) -> None:
            print(t, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(asdict(t)) + "\n")

        results = measure(url, args.db, args.trials, args.items, args.delay, args.poll, args.timeout, Path(tmp),
                          on_trial=report)
    print(summary(results), flush=True)


if __name__ == "__main__":
    main()
