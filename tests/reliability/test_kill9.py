"""Kill -9 suite, short mode (CI): ``INTEGRATIONS_KILL_TRIALS`` trials per database (default 3; the long
mode is ``python -m tests.reliability.killsuite``, see docs/RELIABILITY.md; scripts/test.sh sets 20). Each trial SIGKILLs a real
``integrations sync ID --wait`` process group at a seeded random moment, checks the cursor never passed
undelivered work, recovers with the documented command and checks every item delivered and the cursor
at the maximum."""

from __future__ import annotations

import os

import pytest

from tests.reliability.killsuite import run_trial

TRIALS = int(os.environ.get("INTEGRATIONS_KILL_TRIALS", "3"))


@pytest.mark.kill9
@pytest.mark.parametrize("n", range(TRIALS))
def test_kill9_trial(db_url, tmp_path, n):
    db = "sqlite" if db_url.startswith("sqlite") else "postgres"
    trial = run_trial(db_url, db, seed=7000 + n, workdir=tmp_path / "trial", max_delay=10.0, targeted=True)
    assert trial.violations == [], trial


#: A staged listener, and a write every 10 items (a chunk): on PostgreSQL the chunks are pipelined,
#: processed while the enumeration still runs (``engine.pipeline``), so kills land inside them too
#: (applying at write is off: it would leave the pipeline nothing to do).
PIPELINED = {"KILL_APP_STAGED": "1", "INTEGRATIONS_FLUSH_EVERY": "10", "INTEGRATIONS_PIPELINE_CHUNKS": "true",
             "INTEGRATIONS_APPLY_AT_WRITE": "false"}
#: A staged listener, a write every 10 items: on PostgreSQL each batch is applied at write
#: (``engine.apply``, the default), its deliveries made inside the writer's transaction that records
#: it, so kills land between a batch's deliveries and its commit.
APPLIED = {"KILL_APP_STAGED": "1", "INTEGRATIONS_FLUSH_EVERY": "10"}


@pytest.mark.kill9
@pytest.mark.parametrize("n", range(TRIALS))
def test_kill9_trial_pipelined_chunks(pg_store, pg_url, tmp_path, n):
    trial = run_trial(pg_url, "postgres", seed=7500 + n, workdir=tmp_path / "trial", max_delay=10.0, targeted=True,
                      extra_env=PIPELINED)
    assert trial.violations == [], trial


@pytest.mark.kill9
@pytest.mark.parametrize("n", range(TRIALS))
def test_kill9_trial_applied_at_write(pg_store, pg_url, tmp_path, n):
    trial = run_trial(pg_url, "postgres", seed=7800 + n, workdir=tmp_path / "trial", max_delay=10.0, targeted=True,
                      extra_env=APPLIED)
    assert trial.violations == [], trial


@pytest.mark.kill9
@pytest.mark.parametrize("writers", [1, 2])
def test_kill9_inside_an_applied_batch_loses_nothing(pg_store, pg_url, tmp_path, writers):
    """SIGKILL while a writer is inside a batch's transaction (its staged listener delivering, not yet
    committed): the batches committed before are recorded succeeded, nothing of the killed batch is,
    the cursor has not moved; the next sync delivers everything and the cursor reaches the maximum.

    One writer commits batches in order: what is recorded is the first batch or the first two. Two
    writers (``write_connections``, the default) have two batches in flight, which may commit in
    either order: what is recorded is whole batches, none, one or both, never a part of one."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.reliability.killsuite import ITEMS, _env, checkpoint_index

    home, log = tmp_path / "home", tmp_path / "delivered.txt"
    home.mkdir()
    log.touch()
    integ = pg_store.create_integration(provider_key="synthetic", name="kill-applied", metadata={"items": ITEMS})
    env = _env(pg_url, home, log) | APPLIED | {"KILL_APP_DELAY": "0.05", "INTEGRATIONS_WRITE_CONNECTIONS": str(writers)}
    script = str(Path(sys.executable).parent / "integrations")
    proc = subprocess.Popen([script, "sync", str(integ.id), "--wait"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(log.read_text().split()) < 15 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the second batch (items 10-19) is being delivered inside its transaction
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [run] = pg_store.runs_for_integration(integ.id, limit=1)
    assert run["status"] == "enumerating"
    items = pg_store.items_for_run(run["id"])
    assert {it["status"] for it in items} <= {"success"}
    numbers = [int(it["external_id"].removeprefix("item-")) for it in sorted(items, key=lambda it: it["id"])]
    assert numbers == sorted(numbers)  # item ids in dispatch order, whichever batch committed first
    batches = {n // 10 for n in numbers}
    assert numbers == [n for b in sorted(batches) for n in range(10 * b, 10 * b + 10)]  # whole batches only
    if writers == 1:
        assert batches in ({0}, {0, 1})  # the first batch, or the first two
    else:
        assert batches <= {0, 1, 2}  # at most two batches in flight when the second one was delivering
    assert pg_store.get_integration(integ.id).cursor is None
    again = subprocess.run([script, "sync", str(integ.id), "--wait"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, start_new_session=True)
    assert again.returncode == 0, again.stdout + again.stderr
    delivered = set(log.read_text().split())
    assert delivered >= {f"item-{i}" for i in range(ITEMS)}
    assert checkpoint_index(pg_store.get_integration(integ.id).cursor) == ITEMS - 1
    assert pg_store.get_run(run["id"])["status"] == "failed"  # the killed run was discarded (presumed dead)
