"""A run whose process was killed mid-chunk, re-executed from failure (the UI's Re-execute -> From
failure, Dagster's ``run_retries``, ``reexecute_from_failure``): every item ends delivered and the
cursor reaches the maximum.

Dagster re-executes the interrupted chunk step and the reconcile, but not the mapped chunk steps that
had not started when the process died; before the fix the re-execution ended FAILURE with "sync run N
still has M unfinished items" (measured with the real daemon: tests/reliability/dead_worker.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from integrations_dagster import DefinitionsRef, reexecute_from_failure
from integrations_dagster.store import Store
from tests.reliability.killsuite import _env, checkpoint_index
from tests.support import open_instance

ITEMS = 40  # chunks of 10 (tests/support/kill_app.py)


@pytest.mark.kill9
def test_reexecuting_a_run_killed_mid_chunk_finishes_the_chunks_that_never_started(db_url, tmp_path, monkeypatch):
    store = Store.for_url(db_url)
    integ = store.create_integration(provider_key="synthetic", name="killed", metadata={"items": ITEMS})
    home = tmp_path / "dagster_home"
    home.mkdir()
    log = tmp_path / "delivered.txt"
    log.touch()
    env = {**_env(db_url, home, log), "KILL_APP_DELAY": "0.3"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "integrations"), "sync", str(integ.id), "--wait"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(log.read_text().split()) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid chunk 0: chunks 1-3 never started
    proc.wait()
    delivered_before = len(log.read_text().split())
    assert 3 <= delivered_before < 10, "the kill did not land in the first chunk"
    run = store.runs_for_integration(integ.id, limit=1)[0]
    assert run["status"] == "processing"

    for key in ("INTEGRATIONS_DATABASE_URL", "KILL_APP_LOG", "KILL_APP_DELAY", "DAGSTER_HOME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)  # no workspace.yaml here: the child run carries no UI origin, which is fine
    with open_instance(str(home)) as instance:
        parent = instance.get_run_by_id(run["dagster_run_id"])
        assert parent is not None and parent.status == DagsterRunStatus.STARTED  # the dead worker's run
        instance.report_run_failed(parent, "the run worker was killed (what run monitoring reports)")
        child = reexecute_from_failure(DefinitionsRef("tests.support.kill_app"), parent.run_id, instance=instance,
                                       log_level="WARNING")
        executed = {e.step_key for e in instance.all_logs(child.run_id)
                    if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
        assert child.status == DagsterRunStatus.SUCCESS, executed
    # Dagster selected only the interrupted chunk and the reconcile...
    assert executed == {"synthetic_process_chunk[chunk_0]", "synthetic_reconcile"}
    # ...and still every item was delivered, the run settled and the cursor is at the maximum.
    counts = Counter(log.read_text().split())
    assert {f"item-{i}" for i in range(ITEMS)} <= set(counts)
    assert max(counts.values()) <= 2  # at most the killed chunk's items twice (at-least-once)
    assert store.get_run(run["id"])["status"] == "success"
    assert checkpoint_index(store.get_integration(integ.id).cursor) == ITEMS - 1


@pytest.mark.kill9
def test_a_late_retry_of_a_killed_run_after_the_next_sync_reclaimed_it_changes_nothing(db_url, tmp_path, monkeypatch):
    """The daemon's run retry of a dead worker's run can come after the sensor's next sync already
    reclaimed that run and delivered everything (measured: tests/reliability/dead_worker.py). The late
    re-execution must not redeliver older versions, reopen the settled sync run, move the cursor or fail."""
    store = Store.for_url(db_url)
    integ = store.create_integration(provider_key="synthetic", name="late-retry", metadata={"items": ITEMS})
    home = tmp_path / "dagster_home"
    home.mkdir()
    log = tmp_path / "delivered.txt"
    log.touch()
    env = {**_env(db_url, home, log), "KILL_APP_DELAY": "0.3"}
    script = str(Path(sys.executable).parent / "integrations")
    proc = subprocess.Popen([script, "sync", str(integ.id), "--wait"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(log.read_text().split()) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    dead = store.runs_for_integration(integ.id, limit=1)[0]
    assert dead["status"] == "processing"

    # The next sync (what the sensor launches) reclaims the dead run and delivers everything.
    env["KILL_APP_DELAY"] = "0"
    again = subprocess.run([script, "sync", str(integ.id), "--wait"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert checkpoint_index(store.get_integration(integ.id).cursor) == ITEMS - 1
    dead_status = store.get_run(dead["id"])["status"]
    assert dead_status in ("success", "partial", "failed")
    delivered = Counter(log.read_text().split())

    for key in ("INTEGRATIONS_DATABASE_URL", "KILL_APP_LOG", "KILL_APP_DELAY", "DAGSTER_HOME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)
    with open_instance(str(home)) as instance:
        parent = instance.get_run_by_id(dead["dagster_run_id"])
        assert parent is not None
        if parent.status != DagsterRunStatus.FAILURE:
            instance.report_run_failed(parent, "the run worker was killed (what run monitoring reports)")
        child = reexecute_from_failure(DefinitionsRef("tests.support.kill_app"), parent.run_id, instance=instance,
                                       log_level="WARNING")
        assert child.status == DagsterRunStatus.SUCCESS
    assert Counter(log.read_text().split()) == delivered  # nothing delivered again: newer versions succeeded
    assert store.get_run(dead["id"])["status"] == dead_status  # the settled sync run is not reopened
    assert checkpoint_index(store.get_integration(integ.id).cursor) == ITEMS - 1
    assert store.failed_items(integration_id=integ.id) == []  # nothing shown as failed to operators
