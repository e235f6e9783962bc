"""Sync now: de-duplicated requests, the in-process and run-queue paths, and single flight."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, instance_for_test

from integrations_dagster import DefinitionsRef, Store, SyncRequest, execute_sync, request_sync
from integrations_dagster.orchestration.request import daemon_running, definitions_ref_from_workspace
from tests.support import sched_app

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = ROOT / "dagster.yaml"


@pytest.fixture(autouse=True)
def _reset():  # type: ignore[no-untyped-def]
    sched_app.GATE.reset()
    sched_app.SEEN.clear()
    yield
    sched_app.GATE.released.set()  # never leave a listener blocked
    sched_app.GATE.reset()


def ref(db_url: str) -> DefinitionsRef:
    return DefinitionsRef("tests.support.sched_app", "make_defs", {"database_url": db_url})


def make(store: Store, items: int = 3):  # type: ignore[no-untyped-def]
    return store.create_integration(provider_key="synthetic", name="s", metadata={"items": items})


class Background:
    """Runs ``fn`` in a thread; the result (or exception) is kept for the test."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.value = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.value = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def result(self):  # type: ignore[no-untyped-def]
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "background sync did not finish"
        if self.error:
            raise self.error
        return self.value


def hold_a_sync_in_flight(store: Store, db_url: str, instance, integration_id: int) -> Background:  # type: ignore[no-untyped-def]
    """Start a sync of ``integration_id`` whose listener blocks until the gate opens."""
    sched_app.GATE.hold.add(integration_id)
    bg = Background(lambda: request_sync(instance=instance, provider_key="synthetic", integration_id=integration_id,
                                         definitions_ref=ref(db_url)))
    assert sched_app.GATE.entered.wait(timeout=60), "the held sync never reached its listener"
    return bg


def test_without_a_daemon_the_sync_runs_here_and_is_in_the_run_history(store, db_url, dagster_instance):
    integ = make(store)
    req = request_sync(instance=dagster_instance, provider_key="synthetic", integration_id=integ.id,
                       definitions_ref=ref(db_url))
    assert isinstance(req, SyncRequest)
    assert (req.created, req.mode, req.status, req.finished) == (True, "in_process", DagsterRunStatus.SUCCESS, True)
    run = dagster_instance.get_run_by_id(req.run_id)
    assert run.tags["dagster/partition"] == str(integ.id) and run.tags["integrations/trigger"] == "manual"
    sr = store.runs_for_integration(integ.id, limit=1)[0]
    assert (sr["status"], sr["dagster_run_id"], sr["trigger"]) == ("success", req.run_id, "manual")


def test_sync_now_returns_the_run_already_in_flight(store, db_url, dagster_instance):
    integ = make(store)
    other = make(store)
    held = hold_a_sync_in_flight(store, db_url, dagster_instance, integ.id)
    again = request_sync(instance=dagster_instance, provider_key="synthetic", integration_id=integ.id,
                         definitions_ref=ref(db_url))
    assert (again.created, again.mode, again.status) == (False, "existing", DagsterRunStatus.STARTED)
    # another integration is not affected by this one's run
    assert request_sync(instance=dagster_instance, provider_key="synthetic", integration_id=other.id,
                        definitions_ref=ref(db_url)).created
    sched_app.GATE.released.set()
    first = held.result()
    assert first.run_id == again.run_id and first.status == DagsterRunStatus.SUCCESS
    runs = store.runs_for_integration(integ.id)
    assert [r["status"] for r in runs] == ["success"]  # exactly one sync ran


def test_a_concurrent_manual_launch_ends_skipped(store, db_url, dagster_instance):
    integ = make(store)
    held = hold_a_sync_in_flight(store, db_url, dagster_instance, integ.id)
    # a launch that bypasses sync-now's de-duplication (the UI's launchpad, a script): the engine's
    # single-flight check skips it before enumeration
    second = execute_sync(ref(db_url), "synthetic", integ.id, instance=dagster_instance)
    assert second.status == DagsterRunStatus.SUCCESS  # nothing failed: there was nothing to do
    skipped = store.runs_for_integration(integ.id, limit=1)[0]
    assert skipped["status"] == "skipped" and skipped["dagster_run_id"] == second.run_id
    assert f"integration {integ.id} already has sync run" in skipped["error"]
    assert "this sync is skipped" in skipped["error"]
    assert store.items_for_run(skipped["id"]) == []  # no enumeration happened
    sched_app.GATE.released.set()
    assert held.result().status == DagsterRunStatus.SUCCESS
    statuses = sorted(r["status"] for r in store.runs_for_integration(integ.id))
    assert statuses == ["skipped", "success"]
    assert sorted(x for _, x in sched_app.SEEN) == ["item-0", "item-1", "item-2"]  # each item once


def test_no_heartbeat_means_no_daemon(dagster_instance):
    assert daemon_running(dagster_instance) is False


def test_default_definitions_ref_comes_from_workspace_yaml(tmp_path):
    ws = tmp_path / "workspace.yaml"
    ws.write_text("load_from:\n  - python_module:\n      module_name: my_app.defs\n      attribute: things\n")
    assert definitions_ref_from_workspace(ws) == DefinitionsRef("my_app.defs", "things")
    ws.write_text("load_from:\n  - python_module: my_app.defs\n")
    assert definitions_ref_from_workspace(ws) == DefinitionsRef("my_app.defs", "defs")
    assert definitions_ref_from_workspace(ROOT / "workspace.yaml") == DefinitionsRef("integrations_app.definitions",
                                                                                     "defs")


def _write_workspace(path: Path) -> Path:
    path.write_text(
        "load_from:\n  - python_module:\n      module_name: tests.support.sched_app\n      attribute: defs\n"
        f"      working_directory: {ROOT}\n"
    )
    return path


def _queued_instance(tmp_path: Path):  # type: ignore[no-untyped-def]
    import yaml

    config = yaml.safe_load(DAGSTER_YAML.read_text())
    home = tmp_path / "queued_home"
    home.mkdir()
    return instance_for_test(overrides={"run_coordinator": config["run_coordinator"]}, temp_dir=str(home))


def test_with_a_daemon_the_run_goes_to_the_queue_with_the_workspace_origin(tmp_path, monkeypatch):
    """The daemon path, without waiting for a daemon: the run is QUEUED with the workspace's remote
    origin and tags; a second request returns it. (The heartbeat is written the way the daemon
    writes it: there is no public constructor for a heartbeat, so this one test imports it.)"""
    from dagster._daemon.types import DaemonHeartbeat

    ws = _write_workspace(tmp_path / "workspace.yaml")
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", f"sqlite:///{tmp_path}/unused.sqlite")
    with _queued_instance(tmp_path) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {(x["key"], x["limit"]) for x in limits} == {("integrations/integration_id", 1),
                                                            ("integrations/provider", 4)}
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "QUEUED_RUN_COORDINATOR", None, None))
        assert daemon_running(instance)
        first = request_sync(instance=instance, provider_key="synthetic", integration_id=42, workspace=ws)
        assert (first.created, first.mode, first.status) == (True, "queued", DagsterRunStatus.QUEUED)
        run = instance.get_run_by_id(first.run_id)
        assert run.remote_job_origin is not None
        assert run.remote_job_origin.location_name == "tests.support.sched_app:defs"
        assert run.job_name == "synthetic_sync"
        assert {k: run.tags[k] for k in ("dagster/partition", "integrations/integration_id", "integrations/provider",
                                          "integrations/trigger")} == {
            "dagster/partition": "42", "integrations/integration_id": "42", "integrations/provider": "synthetic",
            "integrations/trigger": "manual"}
        assert "42" in instance.get_dynamic_partitions("synthetic_integrations")
        second = request_sync(instance=instance, provider_key="synthetic", integration_id=42, workspace=ws)
        assert (second.run_id, second.created, second.mode) == (first.run_id, False, "existing")


@pytest.mark.skipif(not os.environ.get("INTEGRATIONS_SLOW_TESTS"), reason="starts a real dagster-daemon (~30 s); "
                    "set INTEGRATIONS_SLOW_TESTS=1")
def test_end_to_end_with_a_real_daemon(tmp_path):
    """A real dagster-daemon: the sensor schedules both integrations once each, then sync-now queues a
    run that the daemon launches."""
    db = f"sqlite:///{tmp_path}/e2e.sqlite"
    store = Store.for_url(db)
    a = store.create_integration(provider_key="synthetic", name="a", metadata={"items": 3}, sync_interval_minutes=60)
    b = store.create_integration(provider_key="synthetic", name="b", metadata={"items": 3}, sync_interval_minutes=60)
    ws = _write_workspace(tmp_path / "workspace.yaml")
    with _queued_instance(tmp_path) as instance:
        env = dict(os.environ, DAGSTER_HOME=instance.root_directory, INTEGRATIONS_DATABASE_URL=db,
                   INTEGRATIONS_SENSOR_INTERVAL_SECONDS="1")
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ws)], env=env,
                                  cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                done = [store.runs_for_integration(i.id, limit=1) for i in (a, b)]
                if all(r and r[0]["status"] == "success" for r in done):
                    break
                time.sleep(0.5)
            assert all(store.runs_for_integration(i.id)[0]["status"] == "success" for i in (a, b))
            assert all(len(store.runs_for_integration(i.id)) == 1 for i in (a, b))  # once each
            runs = instance.get_runs()
            assert {r.tags["integrations/trigger"] for r in runs} == {"schedule"}
            assert sorted(r.tags["dagster/run_key"].split(":")[0] for r in runs) == sorted([str(a.id), str(b.id)])
            assert daemon_running(instance)
            req = request_sync(instance=instance, provider_key="synthetic", integration_id=a.id, workspace=ws,
                               wait=True, timeout=90, poll_interval=0.5)
            assert (req.mode, req.status) == ("queued", DagsterRunStatus.SUCCESS)
            assert store.runs_for_integration(a.id, limit=1)[0]["trigger"] == "manual"
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
