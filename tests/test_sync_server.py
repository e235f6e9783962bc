"""The warm sync server (``integrations serve``, issue 11 point 3): ``integrations sync`` handed to it runs
the same command in a fork of a process that has Dagster loaded, so the calling process never imports
Dagster; output, exit code and the Dagster run are those of a plain ``integrations sync``. A server
with another identity refuses and the client runs the command itself; a dead server's socket is ignored.

Each client runs in a fresh interpreter (``tests.test_cli_fast.probe``) that reports whether it imported
Dagster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integrations_dagster.operations.warm_client import socket_path
from integrations_dagster.security.secrets import generate_key
from tests.test_cli_fast import probe, probe_all

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "INTEGRATIONS_DATABASE_URL": f"sqlite:///{tmp_path}/integrations.sqlite", "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs", "INTEGRATIONS_SECRET_KEY": generate_key(),
           "DAGSTER_DISABLE_TELEMETRY": "yes"}
    for name in ("INTEGRATIONS_TENANT", "INTEGRATIONS_SYNC_SERVER", "INTEGRATIONS_USE_SYNC_SERVER"):
        env.pop(name, None)
    return env


@pytest.fixture
def server(env):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-m", "integrations_dagster.cli", "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "sync server ready on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_sync_through_the_server_never_imports_dagster_and_makes_the_same_run(env, server):
    code, _loaded, out, err = probe(env, "add", "synthetic", "--name", "warm", "--meta", "items=30")
    assert code == 0, err
    iid = out.strip()
    data = probe_all(env, "sync", iid, "--wait", "--json")
    code, loaded, out, err = data["code"], data["dagster"], data["stdout"], data["stderr"]
    assert code == 0, err
    assert loaded == [], f"the client imported Dagster: {loaded[:5]}"
    # nor anything else heavy: the client is a Python start, click and a socket (the operations package
    # once imported the store, SQLAlchemy and pydantic on the way to the warm client: 0.4 s per sync)
    assert data["heavy"] == [], data["heavy"]
    first = json.loads(out)  # stdout is exactly the JSON summary, as without a server
    assert (first["status"], first["total"], first["succeeded"], first["created"]) == ("success", 30, 30, True)
    assert "finished: sync run" in err  # the progress lines reached the client's stderr
    code, loaded, out, err = probe(env, "sync", iid, "--wait", "--json")  # nothing new: no item
    assert (code, loaded) == (0, []), err
    second = json.loads(out)
    assert (second["status"], second["total"], second["cursor_before"]) == ("success", 0, first["cursor_after"])
    # The runs are in the client's Dagster instance, with the origin the UI needs to re-execute them.
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        with DagsterInstance.get() as instance:
            for data in (first, second):
                run = instance.get_run_by_id(data["dagster_run_id"])
                assert run is not None and run.status.value == "SUCCESS"
                assert run.remote_job_origin is not None
                assert run.tags["dagster/partition"] == iid
    finally:
        del os.environ["DAGSTER_HOME"]


def test_exit_code_and_error_of_a_refused_sync_come_back_from_the_server(env, server):
    code, _loaded, out, err = probe(env, "add", "synthetic", "--name", "off", "--meta", "items=3")
    iid = out.strip()
    assert probe(env, "disable", iid, "--reason", "maintenance")[0] == 0
    code, loaded, out, err = probe(env, "sync", iid, "--wait")
    assert (code, loaded) == (1, []), err
    assert "is disabled (maintenance)" in err
    code, loaded, out, err = probe(env, "sync", "999999", "--wait")
    assert (code, loaded) == (1, []) and "999999" in err, err


def test_another_identity_is_refused_and_the_client_runs_the_sync_itself(env, server):
    code, _loaded, out, err = probe(env, "add", "synthetic", "--name", "other", "--meta", "items=4")
    iid = out.strip()
    other = {**env, "INTEGRATIONS_ITEM_TRIES": "2"}  # a setting the server's definitions were not loaded with
    code, loaded, out, err = probe(other, "sync", iid, "--wait", "--json")
    assert code == 0, err
    assert "dagster" in loaded  # ran here, not in the server
    assert json.loads(out)["total"] == 4
    off = {**env, "INTEGRATIONS_USE_SYNC_SERVER": "0"}
    code, loaded, out, err = probe(off, "sync", iid, "--wait", "--json")
    assert code == 0 and "dagster" in loaded, err


def test_a_killed_server_leaves_a_socket_the_client_ignores(env, server):
    code, _loaded, out, err = probe(env, "add", "synthetic", "--name", "dead", "--meta", "items=5")
    iid = out.strip()
    server.kill()
    server.wait(10)
    sock = Path(socket_path(env))
    assert sock.exists()  # SIGKILL: nothing removed it
    t0 = time.monotonic()
    code, loaded, out, err = probe(env, "sync", iid, "--wait", "--json")
    assert code == 0, err
    assert "dagster" in loaded and json.loads(out)["total"] == 5
    assert time.monotonic() - t0 < 120
