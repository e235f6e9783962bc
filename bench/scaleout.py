"""Scale-out benchmark (issue 11 point 4): one big synthetic sync on the in-process executor against the
same sync on the Celery executor with two dagster-celery workers (RabbitMQ at 127.0.0.1:5672), Dagster's
storage and ours on PostgreSQL in both, alternating, same run.

    flock /tmp/bench.lock .venv/bin/python bench/scaleout.py --items 100000 --repeat 3 --delay 0.0005

``--delay``: seconds each listener call sleeps (an I/O-bound listener: an API call or a remote write; 0
measures the framework alone). Workers are started (and warm) before the clock starts; the sync is
``execute_sync`` from this process (the run's orchestrator), chunks of ``--chunk`` items. The
definitions are ``tests/support/celery_app.py``'s (the ones the Celery test uses).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import drop_database, fresh_database, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DB = os.environ.get("INTEGRATIONS_BENCH_DB", "bench_scaleout")


def start_workers(home: Path, config: Path, queue: str, n: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "DAGSTER_DISABLE_TELEMETRY": "yes",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        out = home / f"worker{i}.log"
        procs.append(subprocess.Popen(
            [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config), "-q", queue,
             "-n", f"{queue}_w{i}", "-l", "INFO", "--", "--pool", "solo", "--without-gossip", "--without-mingle"],
            env=env, cwd=str(ROOT), stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 180
    for i in range(n):
        log = home / f"worker{i}.log"
        while " ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or procs[i].poll() is not None:
                raise RuntimeError(f"worker {i} not ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def one(executor: str, items: int, chunk: int, delay: float, workers: int) -> float:
    from dagster import DagsterInstance

    from integrations_dagster import SyncSettings
    from integrations_dagster.orchestration.definitions import celery_executor_config
    from integrations_dagster.orchestration.in_process import DefinitionsRef, execute_sync
    from integrations_dagster.store import Store

    url = fresh_database(DB)
    dagster_url = fresh_database(DB + "_dagster")
    queue = f"bench_{uuid.uuid4().hex[:10]}"
    Store.forget_all()
    store = Store.for_url(url)
    integ = store.create_integration(provider_key="synthetic", name="big", metadata={"items": items})
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "dagster.yaml").write_text(yaml.safe_dump({
            "storage": {"postgres": {"postgres_url": dagster_url.replace("postgresql://", "postgresql+psycopg2://", 1)}},
            "telemetry": {"enabled": False}}))
        config = home / "celery.yaml"
        config.write_text(yaml.safe_dump(celery_executor_config(SyncSettings(celery_queue=queue))))
        os.environ["DAGSTER_HOME"] = str(home)
        with DagsterInstance.get():
            pass  # Dagster's schema, before the workers race to create it
        procs = start_workers(home, config, queue, workers) if executor == "celery" else []
        try:
            ref = DefinitionsRef("tests.support.celery_app", "make_defs",
                                 {"database_url": url, "queue": queue, "delay": delay, "executor": executor,
                                  "chunk_size": chunk, "listener_batch_size": 1000})
            with DagsterInstance.get() as instance:
                t0 = time.perf_counter()
                run = execute_sync(ref, "synthetic", integ.id, instance=instance, log_level="ERROR")
                seconds = time.perf_counter() - t0
        finally:
            stop_workers(procs)
    sync_run = store.runs_for_integration(integ.id, limit=1)[0]
    assert run.status.value == "SUCCESS" and sync_run["success_count"] == items, (run.status, sync_run)
    store.engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--delay", type=float, default=0.0005)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"in_process": [], "celery": []}
    try:
        for _ in range(args.repeat):
            for executor in ("in_process", "celery"):
                times[executor].append(one(executor, args.items, args.chunk, args.delay, args.workers))
                print(executor, f"{times[executor][-1]:.1f}", file=sys.stderr, flush=True)
    finally:
        drop_database(DB)
        drop_database(DB + "_dagster")
    base = statistics.median(times["in_process"])
    rows = []
    for executor, label in (("in_process", "in-process executor (one process)"),
                            ("celery", f"celery executor, {args.workers} workers")):
        med = statistics.median(times[executor])
        runs = ", ".join(f"{t:.1f}" for t in times[executor])
        rows.append([f"{args.items:,}", f"{args.delay * 1000:g} ms", label, f"{med:.1f}", f"{args.items / med:,.0f}",
                     f"{med / base:.2f}x", runs])
    print_table(["items", "listener sleep/item", "executor", "wall s (median)", "items/s", "vs in-process",
                 "runs (s)"], rows)


if __name__ == "__main__":
    main()
