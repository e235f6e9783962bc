"""Scale-out on Celery (issue 11 point 4): a big sync whose chunk steps run on two real dagster-celery
workers (RabbitMQ at 127.0.0.1:5672, Dagster's storage and ours on PostgreSQL), and the same with one
worker SIGKILLed mid-chunk: its chunk is redelivered to the other worker and nothing is lost.

The broker is the machine's RabbitMQ (``scripts/test.sh`` starts it when installed but down); the tests
skip only when RabbitMQ is not installed at all. Each test uses its own Celery queue
(``<INTEGRATIONS_TEST_DB_PREFIX>_<random>``), so parallel runs on one broker never take each other's tasks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import yaml

from integrations_dagster import SyncSettings
from integrations_dagster.orchestration.definitions import celery_executor_config
from integrations_dagster.orchestration.in_process import DefinitionsRef, execute_sync
from providers.synthetic import checkpoint_for
from tests.conftest import DB_PREFIX, PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[1]
BROKER = ("127.0.0.1", 5672)
BIN = Path(sys.executable).parent


def _broker_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=2):
            return True
    except OSError:
        return False


if not _broker_up():
    if shutil.which("rabbitmq-server") is None and not os.environ.get("INTEGRATIONS_REQUIRE_RABBITMQ"):
        pytest.skip("RabbitMQ is not installed (apt-get install rabbitmq-server)", allow_module_level=True)
    raise RuntimeError("RabbitMQ is installed but not answering on 127.0.0.1:5672: run bash scripts/start-rabbitmq.sh")


class Cluster:
    """Two dagster-celery workers on one private queue, Dagster's instance on PostgreSQL."""

    def __init__(self, tmp_path: Path, dagster_pg_url: str) -> None:
        self.queue = f"{DB_PREFIX}_{uuid.uuid4().hex[:10]}".replace("-", "_")
        self.home = tmp_path / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(yaml.safe_dump({
            "storage": {"postgres": {"postgres_url": dagster_pg_url}},
            "telemetry": {"enabled": False},
        }))
        self.config = tmp_path / "celery.yaml"
        self.config.write_text(yaml.safe_dump(celery_executor_config(SyncSettings(celery_queue=self.queue))))
        self.log = tmp_path / "deliveries.log"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.outputs: dict[str, Path] = {}

    def start_worker(self, name: str) -> None:
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "PYTHONPATH": str(ROOT), "INTEGRATIONS_TEST_WORKER": name,
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DAGSTER_DISABLE_TELEMETRY": "yes"}
        out = self.home.parent / f"worker-{name}.log"
        self.outputs[name] = out
        # The documented start command; ``--pool solo``: the task runs in the worker process itself, so
        # killing that process group kills the worker with its task (no pool child left behind).
        cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(self.config),
               "-q", self.queue, "-n", f"{self.queue}_{name}", "-l", "INFO", "--",
               "--pool", "solo", "--without-gossip", "--without-mingle"]
        self.procs[name] = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=out.open("wb"),
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if self.procs[name].poll() is not None:
                    raise AssertionError(f"worker {name} exited:\n{self.outputs[name].read_text()[-3000:]}")
                if " ready." in self.outputs[name].read_text(errors="replace"):
                    pending.discard(name)
            time.sleep(0.2)
        assert not pending, f"workers {pending} not ready in {timeout} s"

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def deliveries(self) -> list[tuple[str, str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.split()) for line in self.log.read_text().splitlines() if line]  # type: ignore[misc]


@pytest.fixture
def cluster(tmp_path, pg_url, worker_id, monkeypatch):  # type: ignore[no-untyped-def]
    name = f"{DB_PREFIX}_{worker_id}_dagster_celery".replace("-", "_")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    c = Cluster(tmp_path, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg2://", 1))
    monkeypatch.setenv("DAGSTER_HOME", str(c.home))
    try:
        yield c
    finally:
        c.stop()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ITEMS = 6000
CHUNK = 500


def _sync(cluster: Cluster, pg_store, pg_url: str, *, delay: float, during=None):  # type: ignore[no-untyped-def]
    from dagster import DagsterInstance

    integ = pg_store.create_integration(provider_key="synthetic", name="celery", metadata={"items": ITEMS})
    ref = DefinitionsRef("tests.support.celery_app", "make_defs",
                         {"database_url": pg_url, "queue": cluster.queue, "log": str(cluster.log), "delay": delay,
                          "chunk_size": CHUNK, "listener_batch_size": 50})
    with DagsterInstance.get():  # creates Dagster's schema once, before two workers race to create it
        pass
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.wait_ready()
    watcher = threading.Thread(target=during, daemon=True) if during else None
    if watcher:
        watcher.start()
    with DagsterInstance.get() as instance:
        run = execute_sync(ref, "synthetic", integ.id, instance=instance, log_level="ERROR")
        step_workers = _step_workers(instance, run.run_id)
    if watcher:
        watcher.join(5)
    return integ, run, step_workers


def _step_workers(instance, run_id: str) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """Celery worker name per step, from the engine events dagster-celery records ("Celery worker")."""
    from dagster import DagsterEventType

    out: dict[str, set[str]] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = getattr(event.event_specific_data, "metadata", None) or {}
        worker = data.get("Celery worker")
        if worker is not None and event.step_key:
            out.setdefault(event.step_key, set()).add(str(getattr(worker, "value", worker)).split("@")[0])
    return out


def _check_settled(pg_store, integ) -> None:  # type: ignore[no-untyped-def]
    sync_run = pg_store.runs_for_integration(integ.id, limit=1)[0]
    assert sync_run["status"] == "success", sync_run
    assert sync_run["success_count"] == ITEMS and sync_run["failed_count"] == 0, sync_run
    assert pg_store.get_integration(integ.id, decrypt=False).cursor == checkpoint_for(ITEMS - 1)
    items = pg_store.items_for_run(sync_run["id"])
    assert len(items) == ITEMS and {i["status"] for i in items} == {"success"}


def test_big_sync_runs_its_chunks_on_two_celery_workers(cluster, pg_store, pg_url):
    integ, run, step_workers = _sync(cluster, pg_store, pg_url, delay=0.0005)
    assert run.status.value == "SUCCESS", cluster.outputs
    _check_settled(pg_store, integ)
    rows = cluster.deliveries()
    per_item = Counter(ext for _w, _pid, ext in rows)
    assert per_item == Counter({f"item-{i}": 1 for i in range(ITEMS)})  # every item once, none twice
    by_worker = Counter(w for w, _pid, _ext in rows)
    assert set(by_worker) == {"w1", "w2"} and min(by_worker.values()) >= CHUNK, by_worker  # both did chunks
    attempts = {i["external_id"]: i["attempts"] for i in pg_store.items_for_run(
        pg_store.runs_for_integration(integ.id, limit=1)[0]["id"])}
    assert all(attempts[ext] == n for ext, n in per_item.items())  # one delivery per successful attempt
    chunk_steps = {k: v for k, v in step_workers.items() if "process_chunk" in k}
    assert len(chunk_steps) == ITEMS // CHUNK, step_workers
    assert {w.rsplit("_", 1)[-1] for ws in chunk_steps.values() for w in ws} == {"w1", "w2"}, step_workers


def test_killed_celery_worker_has_its_chunk_retried_on_the_other(cluster, pg_store, pg_url):
    killed: dict[str, int] = {}

    def kill_w1_mid_chunk() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            mine = sum(1 for w, _pid, _ext in cluster.deliveries() if w == "w1")
            if mine >= CHUNK + CHUNK // 3:  # w1 is a third of the way into its second chunk
                killed["after"] = mine
                cluster.kill("w1")
                return
            time.sleep(0.02)

    integ, run, step_workers = _sync(cluster, pg_store, pg_url, delay=0.002, during=kill_w1_mid_chunk)
    assert killed, "w1 never got far enough to be killed"
    assert cluster.procs["w1"].poll() is not None
    assert run.status.value == "SUCCESS"
    _check_settled(pg_store, integ)  # nothing lost: every item succeeded, the cursor at the maximum
    rows = cluster.deliveries()
    per_item = Counter(ext for _w, _pid, ext in rows)
    assert set(per_item) == {f"item-{i}" for i in range(ITEMS)}
    w2 = Counter(ext for w, _pid, ext in rows if w == "w2")
    assert max(w2.values()) == 1  # the survivor delivered nothing twice
    twice = {ext for ext, n in per_item.items() if n > 1}
    # Delivered twice: only what the killed worker ran without its outcome reaching the database (the
    # listener batch in flight and the one whose status write was in the background), redone by w2.
    assert all(w2[ext] == 1 for ext in twice)
    assert len(twice) <= 2 * 50, len(twice)
    w2_steps = {k for k, ws in step_workers.items() if any(w.endswith("_w2") for w in ws)}
    assert any(k for k, ws in step_workers.items() if any(w.endswith("_w1") for w in ws) and k in w2_steps), \
        step_workers  # a step started on w1 and finished on w2
