"""Issue 13: kill -9 during push. A real ``integrations push ID --wait`` process group is SIGKILLed while
it pushes (deterministically: after the server applied a batch and before the answer arrived; and at
seeded random moments), then recovered with ``integrations sync ID --wait``. Checks: no mutation lost,
order within a key kept, each mutation applied once on the server (a resent batch is answered from
the server's de-duplication by mutation id: delivery is at least once), the outbox empty of pending."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integrations_dagster import Store
from integrations_dagster.store.outbox import Outbox
from providers.tether import local
from providers.tether.fake_server import TetherState, serve

ROOT = Path(__file__).resolve().parents[2]
KEYS = 4  # two mutations per key (create, then update): 8 mutations, pushed one per batch


def _env(db_url: str, home: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.tether_cli_app:defs", "DAGSTER_DISABLE_TELEMETRY": "yes",
           "INTEGRATIONS_PUSH_BATCH_SIZE": "1"}
    env.pop("INTEGRATIONS_TENANT", None)
    return env


def _setup(db_url: str, tmp_path: Path, url: str) -> tuple[Store, int, dict[str, str]]:
    store = Store.for_url(db_url)
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    integ = store.create_integration(provider_key="tether", name="k", metadata={"base_url": url})
    for k in range(KEYS):
        local.edit(store, integ.id, "task", str(k), {"title": f"first {k}"}, operation="create")
        local.edit(store, integ.id, "task", str(k), {"title": f"second {k}"}, operation="update")
    return store, integ.id, _env(db_url, home)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen:
    script = Path(sys.executable).parent / "integrations"
    return subprocess.Popen([str(script), *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _recover_and_check(store: Store, iid: int, env: dict[str, str], state: TetherState) -> None:
    script = Path(sys.executable).parent / "integrations"
    for _ in range(3):
        done = subprocess.run([str(script), "sync", str(iid), "--wait"], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        if Outbox(store).counts(iid)["pending"] == 0 and done.returncode == 0:
            break
    counts = Outbox(store).counts(iid)
    assert counts["pending"] == 0 and counts["synced"] == 2 * KEYS, (counts, done.stdout, done.stderr[-2000:])
    assert state.applied_count == 2 * KEYS  # each applied once, whatever was resent
    for k in range(KEYS):  # the update came after the create: order within the key kept
        assert state.records[("task", str(k))]["title"] == f"second {k}"
        assert state.records[("task", str(k))]["version"] == 2


@pytest.mark.kill9
def test_kill9_after_the_server_applied_a_batch_resends_it_and_loses_nothing(db_url, tmp_path) -> None:
    state = TetherState()
    state.hold_after_push = 3  # the third batch is applied, its answer never arrives
    srv = serve(state)
    try:
        store, iid, env = _setup(db_url, tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
        proc = _start(env, "push", str(iid), "--wait")
        assert state.held.wait(timeout=240), "the push never reached the third batch"
        _kill(proc)
        state.release.set()
        box = Outbox(store)
        assert box.counts(iid)["synced"] == 2 and box.counts(iid)["pending"] == 2 * KEYS - 2
        held_mid = next(mid for mid, n in state.received.items() if mid not in
                        {r["mutation_id"] for r in box.list(iid, statuses=["synced"])})
        state.hold_after_push = None
        _recover_and_check(store, iid, env, state)
        assert state.received[held_mid] == 2  # sent again after the kill: at least once, de-duplicated
    finally:
        state.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.mark.kill9
@pytest.mark.parametrize("seed", [11, 12])
def test_kill9_at_a_random_moment_of_the_push(db_url, tmp_path, seed) -> None:
    state = TetherState()
    state.push_delay = 0.3
    srv = serve(state)
    try:
        store, iid, env = _setup(db_url, tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
        proc = _start(env, "push", str(iid), "--wait")
        deadline = time.monotonic() + 240
        while state.push_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random(seed).uniform(0.0, 2.0))  # somewhere inside the 8 batches (~0.3 s each)
        _kill(proc)
        assert Outbox(store).counts(iid)["synced"] < 2 * KEYS  # killed while pushing, not after
        state.push_delay = 0.0
        _recover_and_check(store, iid, env, state)
        assert all(n <= 2 for n in state.received.values())  # at most the one in flight is resent
    finally:
        srv.shutdown()
        srv.server_close()
