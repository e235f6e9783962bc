"""Issue 13 through the ``integrations`` CLI (in process, CliRunner): sync / push / pull, status with the
outbox counts and the cursor, and the mutation operator verbs; both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete

from integrations_dagster import Store
from integrations_dagster.cli import cli
from providers.tether import local
from providers.tether.fake_server import TetherState, serve


@pytest.fixture
def tether() -> Iterator[tuple[TetherState, str]]:
    state = TetherState()
    srv = serve(state)
    yield state, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store = Store.for_url(db_url)
    local.ensure_tables(store)
    with store.begin() as conn:
        conn.execute(delete(local.tether_records))
    return {"INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
            "INTEGRATIONS_DEFINITIONS": "tests.support.tether_cli_app:defs", "INTEGRATIONS_TENANT": "",
            "DAGSTER_DISABLE_TELEMETRY": "yes"}


def run(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    return result.stdout


def js(env: dict[str, str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    return json.loads(run(env, *args, "--json", code=code))


def test_cycle_verbs_status_and_mutation_operator_verbs(env, db_url, tether) -> None:
    state, url = tether
    store = Store.for_url(db_url)
    state.put("task", "3", {"title": "server"})
    iid = js(env, "add", "tether", "--name", "t", "--meta", f"base_url={url}")["id"]
    local.edit(store, iid, "task", "1", {"title": "ok"}, operation="create")
    local.edit(store, iid, "task", "2", {"title": ""}, operation="create")
    local.edit(store, iid, "task", "2", {"title": "fixed"})  # held back behind the rejected one
    local.edit(store, iid, "task", "3", {"title": "mine"}, base_version=0)
    st = js(env, "status", str(iid))[0]
    assert (st["outbox_pending"], st["outbox_failed"], st["outbox_conflict"]) == (4, 0, 0)

    data = js(env, "sync", str(iid), "--wait")
    assert data["status"] == "success" and data["direction"] == "sync"
    # the timeline shows the push counts, as text and as JSON
    assert "direction sync: pushed 1, conflicts 1, rejected 1, retried later 0" in run(env, "timeline", str(iid))
    assert js(env, "timeline", str(iid))[0]["push"] == {"pushed": 1, "conflicts": 1, "failed": 1, "retried": 0}
    res = data["result"]
    assert (res["pushed"], res["conflicts"], res["failed"], res["skipped"]) == (1, 1, 1, False)
    assert res["rejections"] == [{"mutation_id": res["rejections"][0]["mutation_id"], "entity": "task", "key": "2",
                                  "reason": "validation_failed", "details": {"title": ["required"]}}]
    assert res["pulled"] >= 2 and res["pull_errors"] == 0
    st = js(env, "status", str(iid))[0]
    assert (st["outbox_pending"], st["outbox_failed"], st["outbox_conflict"]) == (1, 1, 1)
    assert st["cursor"] == state.clock
    table = run(env, "status")
    assert "OUTBOX P/F/C" in table.splitlines()[0] and "1/1/1" in table

    # list-failed-items points to the outbox's failed and conflicting mutations (their own ids and verbs)
    assert (f"also 2 failed or conflicting outbox mutation(s): `integrations list-failed-mutations --integration {iid}`"
            in run(env, "list-failed-items", "--integration", str(iid)))
    assert js(env, "list-failed-items") == []  # the JSON stays a list of items
    failed = js(env, "list-failed-mutations", "--integration", str(iid))
    assert [(m["key"], m["status"], m["reason"]) for m in failed] == [("2", "failed", "validation_failed"),
                                                                       ("3", "conflict", "conflict")]
    assert failed[1]["server_state"]["title"] == "server"
    assert "validation_failed" in run(env, "list-failed-mutations")
    # the conflict was resolved by the server's state: give it up; skip the rejected create too
    assert js(env, "skip-mutation", str(failed[1]["id"]), "--reason", "server wins")["status"] == "skipped"
    assert js(env, "skip-mutation", str(failed[0]["id"]))["outbox"]["skipped"] == 2
    assert "is skipped, not failed or conflict" in CliRunner().invoke(
        cli, ["skip-mutation", str(failed[0]["id"])], env=env).output  # a clear error, exit 1
    data = js(env, "push", str(iid), "--wait")
    assert data["direction"] == "push" and data["result"]["pushed"] == 1  # task 2's later update went out
    assert state.records[("task", "2")]["title"] == "fixed"
    # retry: a rejected mutation back to pending; then a pull-only run leaves it pending
    local.edit(store, iid, "task", "4", {"title": ""}, operation="create")
    js(env, "push", str(iid), "--wait")
    bad = js(env, "list-failed-mutations")[0]
    assert js(env, "retry-mutation", str(bad["id"]))["outbox"]["pending"] == 1
    data = js(env, "pull", str(iid), "--wait")
    assert data["direction"] == "pull" and data["result"]["pushed"] == 0
    assert js(env, "status", str(iid))[0]["outbox_pending"] == 1
    text = run(env, "sync", str(iid), "--wait", code=0)
    assert "sync: pushed 0, pulled" in text and "rejected task:4 (validation_failed)" in text


def test_demo_shows_the_tether_cycle(tmp_path: Path) -> None:
    """The README's second demo command: local edits pushed, one rejected for validation, one conflict
    resolved by the server's state, then pulled snapshots."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DAGSTER_DISABLE_TELEMETRY": "yes",
           "PYTHONPATH": str(root)}
    env.pop("INTEGRATIONS_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "integrations_app.demo", "tether"], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "pushed 1, conflicts 1, failed 1, pulled 4, pull errors 0, skipped False" in text
    assert 'rejected task:2 (validation_failed): {"title": ["required"]}' in text
    assert "conflict task:42: the server's state \"renamed on the server\" was applied locally" in text
    assert "'created on another device'" in text and "cursor null -> 3" in text
