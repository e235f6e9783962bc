"""``integrations sync ID --wait``: quiet by default, a line per phase off a terminal, one JSON object
with ``--json``, Dagster's event log only with ``--verbose`` (issue 12, point 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrations_dagster.security.secrets import generate_key

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "integrations"


@pytest.fixture
def run(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs", "INTEGRATIONS_SECRET_KEY": generate_key(),
           "DAGSTER_DISABLE_TELEMETRY": "yes", "CLI_APP_POISON_FILE": str(tmp_path / "poison")}
    env.pop("INTEGRATIONS_TENANT", None)

    def call(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        return proc

    call.poison = tmp_path / "poison"  # type: ignore[attr-defined]

    return call


def test_sync_wait_is_quiet_shows_phases_json_and_verbose(run):
    iid = run("add", "synthetic", "--name", "progress", "--meta", "items=25").stdout.strip()

    plain = run("sync", iid, "--wait")
    lines = plain.stderr.splitlines()
    assert any("starting: syncing integration" in line for line in lines), plain.stderr
    assert any("finished: sync run" in line and "25 of 25 items processed, 0 failed" in line for line in lines), \
        plain.stderr
    assert "DEBUG" not in plain.stderr and "DEBUG" not in plain.stdout
    assert "STEP_SUCCESS" not in plain.stderr + plain.stdout
    assert "items 25: 25 succeeded, 0 failed" in plain.stdout
    assert "sync run" in plain.stdout and ": success" in plain.stdout

    as_json = run("sync", iid, "--wait", "--json")
    data = json.loads(as_json.stdout)  # the whole of stdout is exactly one object
    assert isinstance(data, dict) and data["status"] == "success" and data["total"] == 0

    verbose = run("--verbose", "sync", iid, "--wait")
    assert "RUN_SUCCESS" in verbose.stderr or "STEP_SUCCESS" in verbose.stderr, verbose.stderr[-2000:]
    assert "finished: sync run" in verbose.stderr


def test_retry_is_quiet_shows_phases_and_json_is_one_object(run):
    """`integrations retry` re-executes a run in this process: as quiet as `sync --wait` (phases on
    stderr, no Dagster events without --verbose), and `--json` is exactly one object on stdout."""
    iid = run("add", "synthetic", "--name", "retry", "--meta", "items=12").stdout.strip()
    run.poison.write_text("item-3\n")
    run("sync", iid, "--wait", code=1)
    run.poison.write_text("")  # the listener is fixed
    plain = run("retry", iid, "--json")
    data = json.loads(plain.stdout)  # the whole of stdout is exactly one object
    assert data["status"] == "success" and data["parent_dagster_run_id"]
    lines = plain.stderr.splitlines()
    assert any("starting: re-executing Dagster run" in line for line in lines), plain.stderr
    assert any(line.startswith("[") and "finished: sync run" in line for line in lines), plain.stderr
    assert "DEBUG" not in plain.stderr and "STEP_SUCCESS" not in plain.stderr, plain.stderr[-2000:]


def test_sync_wait_on_a_terminal_draws_progress_without_dagster_events(db_url, tmp_path):
    import pty
    import select

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs", "INTEGRATIONS_SECRET_KEY": generate_key(),
           "DAGSTER_DISABLE_TELEMETRY": "yes", "COLUMNS": "120"}
    env.pop("INTEGRATIONS_TENANT", None)
    iid = subprocess.run([str(SCRIPT), "add", "synthetic", "--name", "tty", "--meta", "items=300"], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(SCRIPT), "sync", iid, "--wait"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=follower, text=True)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=300)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "dispatched" in text and "processing" in text, text[-2000:]
    assert "DEBUG" not in text and "RUN_START" not in text
    assert "items 300: 300 succeeded" in out
