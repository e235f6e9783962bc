"""Every run the project creates can be re-executed from failure through the webserver's GraphQL API.

One ``dagster dev`` (webserver + daemon) on a free port, a temporary ``DAGSTER_HOME`` with the
project's ``dagster.yaml`` and a workspace loading ``tests.support.cli_app`` (its listeners fail the
external ids listed in a file). Failed parent runs, one per path that creates runs:

- ``integrations sync ID --wait`` with no daemon (executed in the CLI's process);
- ``integrations retry ID`` (a from-failure re-execution executed in the CLI's process);
- ``execute_sync`` as the demo calls it;
- ``integrations sync ID --wait`` while the daemon runs (submitted with ``dagster job launch``);
- the operator job ``integrations_retry_failed_items`` launched like the Launchpad does
  (``DagsterGraphQLClient.submit_job_execution``).

After the listener is "fixed", each is re-executed with the UI's mutation
``launchRunReexecution(strategy: FROM_FAILURE)``; each child succeeds and ran only the failed chunk
and the reconcile step (the operator job: its one op). SQLite only: this is about Dagster run
metadata; the engine's behaviour on PostgreSQL is covered by the engine tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.security.secrets import generate_key
from integrations_dagster.cli import cli
from providers.synthetic import checkpoint_for

ROOT = Path(__file__).resolve().parents[1]
POISONED = "item-12"  # 30 items in chunks of 10: chunk_1 fails
FAILED_CHUNK = "synthetic_process_chunk[chunk_1]"
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ui:
    def __init__(self, port: int, home: Path, env: dict[str, str]) -> None:
        self.port, self.home, self.env = port, home, env
        self.url = f"http://127.0.0.1:{port}/graphql"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        resp = httpx.post(self.url, json={"query": query, "variables": variables or {}}, timeout=120)
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def reexecute_from_failure(self, parent_run_id: str) -> str:
        res = self.graphql(REEXECUTE, {"parentRunId": parent_run_id})["launchRunReexecution"]
        assert res["__typename"] == "LaunchRunSuccess", res
        return res["run"]["runId"]


def wait_for(instance: DagsterInstance, run_id: str, timeout: float = 300) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in TERMINAL:
            return run.status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def steps_started(instance: DagsterInstance, run_id: str) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START) if e.step_key}


def cli_json(env: dict[str, str], *args: str, code: int) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ui_reexec")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    workspace = tmp / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: tests.support.cli_app\n      attribute: defs\n"
        f"      working_directory: {ROOT}\n"
    )
    poison = tmp / "poison.txt"
    poison.write_text(POISONED + "\n")
    env = {
        "DAGSTER_HOME": str(home),
        "INTEGRATIONS_DATABASE_URL": f"sqlite:///{tmp}/integrations.sqlite",
        "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs",
        "INTEGRATIONS_WORKSPACE": str(workspace),
        "CLI_APP_POISON_FILE": str(poison),
        "INTEGRATIONS_SECRET_KEY": generate_key(),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("INTEGRATIONS_TENANT", raising=False)
        yield {"tmp": tmp, "home": home, "workspace": workspace, "poison": poison, "env": env}


def start_dagster_dev(setting: dict) -> tuple[subprocess.Popen, Ui]:
    port = free_port()
    env = {**os.environ, **setting["env"], "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = open(setting["tmp"] / "dagster_dev.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(setting["workspace"]), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return proc, Ui(port, setting["home"], setting["env"])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then SIGKILL what lingers (code servers take 30-45 s)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def wait_until_ready(ui: Ui, instance: DagsterInstance, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            names = [e["name"] for e in ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]]
        except (httpx.HTTPError, KeyError, TypeError):
            names = []
        beats = instance.get_daemon_heartbeats()
        if names and "QUEUED_RUN_COORDINATOR" in beats:
            return
        time.sleep(1)
    raise AssertionError(f"dagster dev not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def test_every_path_creates_runs_the_ui_reexecutes_from_failure(setting):
    env, poison = setting["env"], setting["poison"]
    store = Store.for_url(env["INTEGRATIONS_DATABASE_URL"])
    ids = {}
    for path in ("sync", "retry", "demo", "daemon", "operator"):
        ids[path] = store.create_integration(provider_key="synthetic", name=path, metadata={"items": 30}).id
    parents: dict[str, str] = {}

    # --- without a daemon: every run executes in this process -------------------------------------------
    out = cli_json(env, "sync", str(ids["sync"]), "--wait", code=1)
    assert out["dagster_status"] == "FAILURE" and out["failed"] == 1
    parents["sync"] = out["dagster_run_id"]

    cli_json(env, "sync", str(ids["retry"]), "--wait", code=1)
    out = cli_json(env, "retry", str(ids["retry"]), code=1)  # still poisoned: the retry run fails too
    assert out["dagster_status"] == "FAILURE"
    parents["retry"] = out["dagster_run_id"]

    with DagsterInstance.get() as instance:
        run = execute_sync(DefinitionsRef("tests.support.cli_app", "defs"), "synthetic", ids["demo"],
                           instance=instance, log_level="CRITICAL")
        assert run.status == DagsterRunStatus.FAILURE
        parents["demo"] = run.run_id
        run = execute_sync(DefinitionsRef("tests.support.cli_app", "defs"), "synthetic", ids["operator"],
                           instance=instance, log_level="CRITICAL")
        assert run.status == DagsterRunStatus.FAILURE  # leaves a failed item for the operator job

        proc, ui = start_dagster_dev(setting)
        try:
            wait_until_ready(ui, instance, proc, setting["tmp"] / "dagster_dev.log")
            [location] = [e["name"] for e in ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]]

            # --- with the daemon: `sync --wait` submits with `dagster job launch`, the daemon runs it ------
            out = cli_json(env, "sync", str(ids["daemon"]), "--wait", code=1)
            assert out["dagster_status"] == "FAILURE"
            parents["daemon"] = out["dagster_run_id"]

            # --- an operator job launched like the Launchpad does --------------------------------------
            client = DagsterGraphQLClient("127.0.0.1", port_number=ui.port)
            op_run = client.submit_job_execution(
                "integrations_retry_failed_items", repository_location_name=location,
                repository_name="__repository__",
                run_config={"ops": {"retry_failed_items": {"config": {"integration_id": ids["operator"]}}}},
            )
            assert wait_for(instance, op_run) == DagsterRunStatus.FAILURE  # the item fails again
            parents["operator"] = op_run

            for path, run_id in parents.items():
                queued = bool(instance.all_logs(run_id, of_type=DagsterEventType.RUN_ENQUEUED))
                assert queued == (path in ("daemon", "operator")), path  # the others ran in this process
                origin = instance.get_run_by_id(run_id).remote_job_origin
                assert origin is not None, path
                assert origin.repository_origin.code_location_origin.location_name == location, path

            poison.write_text("")  # the listener is fixed
            children = {path: ui.reexecute_from_failure(run_id) for path, run_id in parents.items()}
            for path, child in children.items():
                assert wait_for(instance, child) == DagsterRunStatus.SUCCESS, path
                assert instance.get_run_by_id(child).parent_run_id == parents[path]
                expected = {"retry_failed_items"} if path == "operator" else {FAILED_CHUNK, "synthetic_reconcile"}
                assert steps_started(instance, child) == expected, path
        finally:
            stop(proc)

    for path, integration_id in ids.items():
        assert store.failed_items(integration_id=integration_id) == [], path
        assert store.get_integration(integration_id, decrypt=False).cursor == checkpoint_for(29), path


def test_the_demo_runs_carry_the_project_workspace_location():
    """The demo (and `integrations` from the project folder) name the location `dagster dev -w workspace.yaml`
    shows; a factory with arguments, which no workspace can load, gets the `-m MODULE -a ATTR` name."""
    from integrations_app.demo import REF
    from integrations_dagster.orchestration.reexecutable import job_origin

    origin = job_origin(REF, "synthetic_sync", ROOT / "workspace.yaml")
    assert origin.location_name == "integrations_app.definitions:defs"
    assert (origin.repository_origin.repository_name, origin.job_name) == ("__repository__", "synthetic_sync")
    factory = DefinitionsRef("tests.support.app", "make_defs", {"database_url": "sqlite://"})
    assert job_origin(factory, "synthetic_sync", ROOT / "workspace.yaml").location_name == "tests.support.app:make_defs"


def test_a_run_without_a_daemon_carries_the_workspace_location_by_its_configured_name(tmp_path, monkeypatch,
                                                                                     dagster_instance):
    from integrations_dagster import request_sync

    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", f"sqlite:///{tmp_path}/integrations.sqlite")
    monkeypatch.delenv("CLI_APP_POISON_FILE", raising=False)
    ws = tmp_path / "workspace.yaml"
    ws.write_text("load_from:\n  - python_module:\n      module_name: tests.support.cli_app\n      attribute: defs\n"
                  f"      working_directory: {ROOT}\n      location_name: our_integrations\n")
    store = Store.for_url(f"sqlite:///{tmp_path}/integrations.sqlite")
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 3})
    req = request_sync(instance=dagster_instance, provider_key="synthetic", integration_id=integ.id,
                       definitions_ref=DefinitionsRef("tests.support.cli_app", "defs"), workspace=ws, use_daemon=False)
    assert (req.mode, req.status) == ("in_process", DagsterRunStatus.SUCCESS)
    run = dagster_instance.get_run_by_id(req.run_id)
    assert run.remote_job_origin.location_name == "our_integrations"
    assert run.tags["dagster/code_location"] == "our_integrations"


def test_a_broken_workspace_file_does_not_stop_an_in_process_sync(tmp_path, monkeypatch, dagster_instance):
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", f"sqlite:///{tmp_path}/integrations.sqlite")
    monkeypatch.delenv("CLI_APP_POISON_FILE", raising=False)
    ws = tmp_path / "workspace.yaml"
    ws.write_text("load_from: [{python_module: {}}]\n: not yaml {\n")
    store = Store.for_url(f"sqlite:///{tmp_path}/integrations.sqlite")
    integ = store.create_integration(provider_key="synthetic", name="s", metadata={"items": 3})
    run = execute_sync(DefinitionsRef("tests.support.cli_app", "defs"), "synthetic", integ.id,
                       instance=dagster_instance, workspace=ws, log_level="CRITICAL")
    assert run.status == DagsterRunStatus.SUCCESS
    assert run.remote_job_origin.location_name == "tests.support.cli_app:defs"  # as `dagster dev -m ... -a defs`
