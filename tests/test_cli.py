"""The ``integrations`` console script, on SQLite and PostgreSQL.

The main flows run the installed console script in a real subprocess (``.venv/bin/integrations``) with
a fresh ``DAGSTER_HOME``; the many error paths use ``click.testing.CliRunner`` to stay fast. Listener
behaviour of ``tests.support.cli_app`` is steered with a file of poisoned external ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from integrations_dagster import Store
from integrations_dagster.security.secrets import generate_key
from integrations_dagster.store import models as m
from integrations_dagster.store import utcnow
from integrations_dagster.cli import cli
from providers.synthetic import checkpoint_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "integrations"
TOKEN = "ghp_TOPSECRET_0123456789abcdef"

INTEGRATION_KEYS = {
    "id", "tenant", "provider", "name", "metadata", "has_credentials", "enabled", "health", "disabled_reason",
    "interval_minutes", "cron", "cursor", "consecutive_failures", "last_synced_at", "next_sync_at",
    "last_run_status", "created_at", "updated_at",
}
STATUS_KEYS = {"id", "tenant", "provider", "name", "enabled", "health", "cursor", "last_synced_at", "next_sync_at",
               "last_run_id", "last_run_status", "last_dagster_run_id", "pending_items", "failed_items",
               "superseded_items", "outbox_pending", "outbox_failed", "outbox_conflict"}
ITEM_KEYS = {"id", "integration_id", "sync_run_id", "external_id", "checkpoint", "status", "attempts", "last_error",
             "skip_reason", "failed_at"}
SYNC_KEYS = {"integration_id", "dagster_run_id", "dagster_status", "created", "sync_run_id", "status", "total",
             "succeeded", "failed", "skipped", "superseded", "requests", "cursor_before", "cursor_after", "error"}
ITEM_ACTION_KEYS = {"item_id", "integration_id", "sync_run_id", "item_status", "attempts", "last_error",
                    "skip_reason", "run_status", "cursor_before", "cursor_after", "changed"}
ADVANCE_KEYS = {"integration_id", "reclaimed_items", "abandoned_items", "runs", "cursor_before", "cursor_after"}
RUN_KEYS = {"id", "dagster_run_id", "status", "trigger", "started_at", "finished_at", "total", "succeeded", "failed",
            "skipped", "superseded", "requests", "cursor_before", "cursor_after", "error", "request_log", "direction",
            "push"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "dagster_home"
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


@pytest.fixture
def poison(tmp_path: Path) -> Path:
    return tmp_path / "poison.txt"


@pytest.fixture
def env(db_url: str, home: Path, poison: Path) -> dict[str, str]:
    """The variables every CLI call gets (also used by CliRunner, which restores them afterwards)."""
    return {
        "INTEGRATIONS_DATABASE_URL": db_url,
        "DAGSTER_HOME": str(home),
        "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs",
        "CLI_APP_POISON_FILE": str(poison),
        "INTEGRATIONS_SECRET_KEY": generate_key(),
        "INTEGRATIONS_TENANT": "",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }


class Session:
    """Runs the console script in a subprocess and keeps every byte it printed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.env.pop("INTEGRATIONS_TENANT", None)
        self.outputs: list[str] = []

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
        self.outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def json(self, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
        return json.loads(self(*args, "--json", code=code).stdout)

    def inproc(self, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
        """The same CLI through CliRunner (fast); its output joins the session's for the secret scan."""
        env = {k: self.env[k] for k in ("INTEGRATIONS_DATABASE_URL", "DAGSTER_HOME", "INTEGRATIONS_DEFINITIONS",
                                         "CLI_APP_POISON_FILE", "INTEGRATIONS_SECRET_KEY")}
        result = invoke(env, *args, code=code)
        self.outputs += [result.stdout, result.stderr]
        return result


def invoke(env: dict[str, str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def invoke_json(env: dict[str, str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    return json.loads(invoke(env, *args, "--json", code=code).stdout)


def scan_tree_for(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# --- the main flows, as real subprocesses -----------------------------------------------------------
def test_recovery_story_and_no_secret_anywhere(db_url, env, home, poison, tmp_path):
    """A full operator session with a real token: subprocesses for the story, CliRunner for the rest."""
    run = Session(env)
    iid = int(run("add", "synthetic", "--name", "story", "--meta", "items=30", "--secret", f"token={TOKEN}",
                  "--interval", "5").stdout)
    poison.write_text("item-12\nitem-20\n")

    # a poisoned item (and a second, fixable one) fail: the sync is partial and exits 1
    result = run.json("sync", str(iid), "--wait", code=1)
    assert set(result) == SYNC_KEYS
    assert (result["status"], result["dagster_status"], result["total"], result["succeeded"], result["failed"],
            result["skipped"], result["cursor_before"], result["cursor_after"], result["created"]) == (
        "partial", "FAILURE", 30, 28, 2, 0, None, checkpoint_for(11), True)

    failed = run.json("list-failed-items", "--integration", str(iid))
    assert [set(f) for f in failed] == [ITEM_KEYS, ITEM_KEYS]
    by_ext = {f["external_id"]: f for f in failed}
    assert set(by_ext) == {"item-12", "item-20"} and by_ext["item-12"]["attempts"] == 2
    assert "poisoned item item-12" in by_ext["item-12"]["last_error"]
    table = run.inproc("list-failed-items").stdout
    assert "EXTERNAL ID" in table and "item-12" in table and "item-20" in table

    # item-12 is unrecoverable: skip it, then advance-cursor moves the cursor up to item-20
    skipped = run.json("skip-sync-item", str(by_ext["item-12"]["id"]), "--reason", "corrupt upstream record")
    assert set(skipped) == ITEM_ACTION_KEYS and skipped["skip_reason"] == "corrupt upstream record"
    advanced = run.json("advance-cursor", str(iid))
    assert set(advanced) == ADVANCE_KEYS and advanced["cursor_after"] == checkpoint_for(19)

    # item-20's cause is fixed: `retry` re-executes the failed Dagster run from failure
    poison.write_text("item-12\n")
    retried = run.json("retry", str(iid))
    assert (retried["status"], retried["dagster_status"], retried["cursor_after"], retried["skipped"],
            retried["succeeded"]) == ("success", "SUCCESS", checkpoint_for(29), 1, 29)
    assert retried["parent_dagster_run_id"] == result["dagster_run_id"]
    status = json.loads(run.inproc("status", str(iid), "--json").stdout)
    assert [set(x) for x in status] == [STATUS_KEYS]
    assert (status[0]["cursor"], status[0]["failed_items"], status[0]["health"], status[0]["last_run_status"]) == (
        checkpoint_for(29), 0, "healthy", "success")
    assert "no failed items" in run.inproc("list-failed-items").stdout

    # an API error that quotes the token: the failure is reported, the token is not
    leaky = int(run("add", "tokened", "--name", "leaky", "--meta", "fail=true", "--secret", f"token={TOKEN}",
                    "--tenant", "acme").stdout)
    out = run("sync", str(leaky), "--wait", code=1).stdout
    assert "upstream refused Authorization: Bearer ***" in out
    timeline = json.loads(run.inproc("timeline", str(leaky), "--tenant", "acme", "--json").stdout)
    assert [set(r) for r in timeline] == [RUN_KEYS] and timeline[0]["status"] == "failed"
    listed = json.loads(run.inproc("list", "--json").stdout)
    assert [set(i) for i in listed] == [INTEGRATION_KEYS, INTEGRATION_KEYS]
    assert all(i["has_credentials"] for i in listed)
    shown = json.loads(run.inproc("show", str(leaky), "--json").stdout)
    assert set(shown) == INTEGRATION_KEYS | {"recent_runs"}
    for args in (["show", str(iid)], ["list"], ["status"], ["timeline", str(iid)], ["timeline", str(leaky)],
                 ["list-failed-items", "--json"], ["-v", "advance-cursor", str(leaky)]):
        run.inproc(*args)
    assert json.loads(run("rotate-key", "--json").stdout) == {"rotated": 2, "total": 2}

    # the token is nowhere: not in any output, not in Dagster's storage, not in the database file
    joined = "\n".join(run.outputs)
    assert "Dagster run" in joined and "item-20" in joined and TOKEN not in joined
    assert scan_tree_for(home, TOKEN.encode()) == []
    if db_url.startswith("sqlite"):
        assert scan_tree_for(tmp_path, TOKEN.encode()) == []
    store = Store.for_url(db_url)
    with store.engine.connect() as conn:
        rows = conn.execute(m.sync_runs.select()).all() + conn.execute(m.integrations.select()).all()
    assert TOKEN not in repr(rows)


def test_everyday_verbs_as_subprocesses(db_url, env, home):
    run = Session(env)
    iid = int(run("add", "synthetic", "--name", "daily", "--meta", "items=3", "--cron", "*/15 * * * *").stdout)
    run_id = run("sync", str(iid)).stdout.strip()  # no daemon: runs here, prints the Dagster run id
    assert len(run_id) == 36
    store = Store.for_url(db_url)
    assert store.run_for_dagster_run(run_id)["status"] == "success"
    assert f"integration {iid} disabled" in run("disable", str(iid), "--reason", "paused").stdout
    assert "revision" in run.inproc("db", "upgrade").stdout
    shown = json.loads(run.inproc("show", str(iid), "--json").stdout)
    assert (shown["health"], shown["enabled"], shown["disabled_reason"], shown["cron"]) == (
        "disabled", False, "paused", "*/15 * * * *")
    assert f"integration {iid} enabled" in run.inproc("enable", str(iid)).stdout
    pruned = json.loads(run.inproc("prune", "--days", "0", "--json").stdout)
    assert set(pruned) == {"days", "cutoff", "sync_items_deleted", "requests_deleted"}
    assert pruned["sync_items_deleted"] == 3
    assert f"integration {iid} removed" in run("remove", str(iid)).stdout
    assert run("show", str(iid), code=1).stderr.strip() == f"Error: integration {iid} not found"


# --- listings, JSON and actions in-process ------------------------------------------------------------
def _synced(env, poison, items: int = 30, bad: tuple[str, ...] = ("item-12",), tenant: str = "default") -> int:  # type: ignore[no-untyped-def]
    iid = int(invoke(env, "add", "synthetic", "--name", "x", "--meta", f"items={items}", "--tenant", tenant).stdout)
    poison.write_text("\n".join(bad))
    invoke(env, "sync", str(iid), "--wait", code=1 if bad else 0)
    return iid


def test_table_outputs(env, poison, db_url):
    iid = _synced(env, poison)
    store = Store.for_url(db_url)
    run = store.runs_for_integration(iid)[0]
    with store.begin() as conn:
        conn.execute(m.requests_log.insert().values(
            integration_id=iid, sync_run_id=run["id"], method="GET", url="https://api.test/items?page=2",
            status_code=429, duration_ms=12.5, bytes=0, attempt=2, created_at=utcnow()))
    listing = invoke(env, "list").stdout
    assert listing.splitlines()[0].split() == ["ID", "TENANT", "PROVIDER", "NAME", "ENABLED", "HEALTH", "SCHEDULE",
                                               "CREDENTIALS"]
    assert "provider default" in listing
    status = invoke(env, "status").stdout
    assert status.splitlines()[0].split()[:4] == ["ID", "PROVIDER", "NAME", "HEALTH"]
    assert f'"{checkpoint_for(11)}"' in status and "partial" in status
    timeline = invoke(env, "timeline", str(iid)).stdout
    assert f"sync run {run['id']}  partial" in timeline
    assert "GET https://api.test/items?page=2 -> 429 in 12.5 ms (attempt 2)" in timeline
    shown = invoke(env, "show", str(iid)).stdout
    assert "cursor:" in shown and "recent runs:" in shown
    sync_out = invoke(env, "sync", str(iid), "--wait", code=1).stdout  # item-12 fails again in the new run
    assert "items 18: 17 succeeded, 1 failed, 0 skipped; 0 requests" in sync_out
    assert f'cursor "{checkpoint_for(11)}" -> "{checkpoint_for(11)}"' in sync_out


def test_retry_item_and_its_exit_codes(env, poison):
    iid = _synced(env, poison, bad=("item-12", "item-20"))
    failed = {f["external_id"]: f["id"] for f in invoke_json(env, "list-failed-items", "--integration", str(iid))}
    again = invoke(env, "retry-item", str(failed["item-12"]), code=1).stdout  # not fixed yet
    assert "failed again" in again and "poisoned item item-12" in again
    poison.write_text("item-20")
    res = invoke_json(env, "retry-item", str(failed["item-12"]))
    assert set(res) == ITEM_ACTION_KEYS
    assert (res["item_status"], res["cursor_before"], res["cursor_after"]) == (
        "success", checkpoint_for(11), checkpoint_for(19))
    err = invoke(env, "retry-item", str(failed["item-12"]), code=1).stderr
    assert err.strip() == f"Error: sync item {failed['item-12']} is success, not failed; only failed items can be retried"
    err = invoke(env, "skip-sync-item", str(failed["item-12"]), code=1).stderr
    assert f"sync item {failed['item-12']} is success, not failed" in err


def test_retry_without_failed_items_or_dagster_run(env, poison, db_url):
    iid = _synced(env, poison, items=3, bad=())
    assert invoke(env, "retry", str(iid), code=1).stderr.strip() == \
        f"Error: integration {iid} has no failed items to retry"
    # a failed item whose run was not made by Dagster (engine used directly)
    store = Store.for_url(db_url)
    run_id = store.runs_for_integration(iid)[0]["id"]
    with store.begin() as conn:
        conn.execute(m.sync_items.update().where(m.sync_items.c.run_id == run_id).values(status="failed"))
        conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == run_id).values(dagster_run_id=None))
    assert "has no Dagster run to re-execute; use `integrations retry-item" in invoke(
        env, "retry", str(iid), code=1).stderr
    with store.begin() as conn:
        conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == run_id).values(dagster_run_id="not-a-run"))
    assert "Dagster run not-a-run of sync run" in invoke(env, "retry", str(iid), code=1).stderr


def test_advance_cursor_reclaims_a_stuck_item(env, poison, db_url):
    iid = _synced(env, poison, items=30, bad=())
    store = Store.for_url(db_url)
    run_id = store.runs_for_integration(iid)[0]["id"]
    with store.begin() as conn:
        conn.execute(m.sync_items.update().where(m.sync_items.c.run_id == run_id,
                                                 m.sync_items.c.external_id == "item-25")
                     .values(status="processing", claimed_at=utcnow() - timedelta(hours=1), finished_at=None))
    res = invoke(env, "advance-cursor", str(iid)).stdout
    assert "reclaimed 1 stuck and 0 abandoned items as failed" in res
    failed = invoke_json(env, "list-failed-items")
    assert [f["external_id"] for f in failed] == ["item-25"] and "abandoned" in failed[0]["last_error"]
    invoke(env, "skip-sync-item", str(failed[0]["id"]))
    assert invoke_json(env, "status", str(iid))[0]["cursor"] == checkpoint_for(29)


def test_prune_keeps_failed_rows(env, poison, db_url):
    iid = _synced(env, poison, items=10, bad=("item-4",))
    store = Store.for_url(db_url)
    with store.begin() as conn:
        conn.execute(m.sync_items.update().values(finished_at=utcnow() - timedelta(days=31)))
    assert invoke_json(env, "prune", "--days", "40")["sync_items_deleted"] == 0
    out = invoke(env, "prune")
    assert "deleted 9 sync items and 0 request log rows older than 30 days" in out.stdout
    assert "sync items deleted: 9" in out.stderr  # progress on stderr
    assert [f["external_id"] for f in invoke_json(env, "list-failed-items", "--integration", str(iid))] == ["item-4"]


def test_key_generation_and_rotation(env, db_url):
    old = env["INTEGRATIONS_SECRET_KEY"]
    iid = invoke(env, "add", "synthetic", "--name", "gh", "--secret", f"token={TOKEN}").stdout.strip()
    new = invoke(env, "generate-key").stdout.strip()
    assert len(new) == 44 and new != old
    bad = invoke(env | {"INTEGRATIONS_SECRET_KEY": new}, "rotate-key", code=1)
    assert "cannot be decrypted" in bad.stderr and "nothing was changed" in bad.stderr
    assert invoke_json(env | {"INTEGRATIONS_SECRET_KEY": f"{new},{old}"}, "rotate-key") == {"rotated": 1, "total": 1}
    store = Store.for_url(db_url)
    from integrations_dagster.security.secrets import CredentialCipher

    store.cipher = CredentialCipher(new)  # only the new key is needed now
    assert store.get_integration(int(iid)).credentials == {"token": TOKEN}
    nokey = invoke(env | {"INTEGRATIONS_SECRET_KEY": ""}, "rotate-key", code=1).stderr
    assert "INTEGRATIONS_SECRET_KEY must be set" in nokey
    for verb in (["list"], ["show", iid], ["list-failed-items"]):  # also the verbs that read without the store
        invalid = invoke(env | {"INTEGRATIONS_SECRET_KEY": "not-a-key"}, *verb, code=1).stderr
        assert "is not a valid Fernet key" in invalid, verb


def test_add_json_and_credentials_refused_without_a_key(env):
    data = invoke_json(env, "add", "synthetic", "--name", "n", "--meta", 'fail_external_ids=["item-1"]',
                       "--meta", "items=5", "--interval", "7")
    assert set(data) == INTEGRATION_KEYS | {"recent_runs"}
    assert (data["metadata"], data["interval_minutes"], data["tenant"]) == (
        {"fail_external_ids": ["item-1"], "items": 5}, 7, "default")
    res = invoke(env | {"INTEGRATIONS_SECRET_KEY": "", "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS": ""},
                 "add", "synthetic", "--name", "n", "--secret", f"token={TOKEN}", code=1)
    assert "refusing to store credentials unencrypted: set INTEGRATIONS_SECRET_KEY" in res.stderr
    assert TOKEN not in res.output
    assert len(invoke_json(env, "list")) == 1
    ok = invoke(env | {"INTEGRATIONS_SECRET_KEY": "", "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS": "1"},
                "add", "synthetic", "--name", "demo", "--secret", "token=demo-token")
    assert ok.stdout.strip().isdigit()


# --- errors and exit codes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["show"],  # missing id
        ["show", "abc"],  # not an int
        ["frobnicate"],  # unknown verb
        ["add", "synthetic"],  # --name required
        ["add", "synthetic", "--name", "x", "--interval", "5", "--cron", "* * * * *"],
        ["add", "synthetic", "--name", "x", "--interval", "0"],
        ["add", "synthetic", "--name", "x", "--meta", "novalue"],
        ["prune", "--days", "-1"],
        ["timeline", "1", "--limit", "0"],
        ["list-failed-items", "--integration", "x"],
        ["skip-sync-item"],
    ],
)
def test_usage_errors_exit_2(env, args):
    result = invoke(env, *args, code=2)
    assert "Usage:" in result.output or "Error:" in result.output


def test_bad_secret_syntax_does_not_echo_the_value(env):
    result = invoke(env, "add", "synthetic", "--name", "x", "--secret", TOKEN, code=2)
    assert TOKEN not in result.output and "<hidden>" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "999"], "integration 999 not found"),
        (["enable", "999"], "integration 999 not found"),
        (["disable", "999"], "integration 999 not found"),
        (["remove", "999"], "integration 999 not found"),
        (["status", "999"], "integration 999 not found"),
        (["sync", "999"], "integration 999 not found"),
        (["retry", "999"], "integration 999 not found"),
        (["advance-cursor", "999"], "integration 999 not found"),
        (["timeline", "999"], "integration 999 not found"),
        (["list-failed-items", "--integration", "999"], "integration 999 not found"),
        (["retry-item", "999"], "sync item 999 not found"),
        (["skip-sync-item", "999"], "sync item 999 not found"),
        (["add", "nope", "--name", "x"], "unknown provider 'nope'; known providers: synthetic, tokened"),
        (["add", "synthetic", "--name", "x", "--cron", "sometimes"], "invalid cron expression 'sometimes'"),
    ],
)
def test_user_errors_exit_1_with_a_named_message(env, args, message):
    result = invoke(env, *args, code=1)
    assert result.stderr.strip() == f"Error: {message}" or message in result.stderr


def test_environment_errors_exit_1(env, tmp_path):
    iid = invoke(env, "add", "synthetic", "--name", "x").stdout.strip()
    no_home = {k: v for k, v in env.items() if k != "DAGSTER_HOME"} | {"DAGSTER_HOME": ""}
    assert "DAGSTER_HOME is not set" in invoke(no_home, "sync", iid, code=1).stderr
    missing = env | {"DAGSTER_HOME": str(tmp_path / "nope")}
    assert "is not a directory" in invoke(missing, "sync", iid, code=1).stderr
    bad_defs = invoke(env, "--defs", "no_such_module:defs", "add", "synthetic", "--name", "x", code=1).stderr
    assert "cannot load the definitions 'no_such_module:defs'" in bad_defs
    invoke(env, "disable", iid, "--reason", "token revoked")
    assert invoke(env, "sync", iid, code=1).stderr.strip() == (
        f"Error: integration {iid} is disabled (token revoked); enable it first with `integrations enable {iid}`")
    invoke(env, "enable", iid)
    not_ours = invoke(env, "--defs", "integrations_dagster:__name__", "advance-cursor", iid, code=1).stderr
    assert "cannot load the definitions" in not_ours or "not made by" in not_ours
    down = invoke(env, "--database-url", "postgresql://postgres:pw@127.0.0.1:1/nothing", "list", code=1).stderr
    assert "cannot open the integrations database postgresql://postgres:***@127.0.0.1:1/nothing" in down
    assert ":pw@" not in down


def test_the_framework_cli_has_no_provider_verbs(env):
    # The fake GitHub API belongs to its provider: `python -m providers.github.fake_api`.
    assert "No such command 'fake-github'" in invoke(env, "fake-github", "--help", code=2).stderr


# --- tenants ------------------------------------------------------------------------------------------
def test_every_verb_treats_another_tenants_ids_as_not_found(env, poison):
    iid = _synced(env, poison, items=5, bad=("item-2",), tenant="acme")
    item = invoke_json(env, "list-failed-items")[0]["id"]
    for scope in (["--tenant", "globex"], None):
        verbs = [
            ["show", str(iid)], ["enable", str(iid)], ["disable", str(iid)], ["remove", str(iid)],
            ["status", str(iid)], ["sync", str(iid)], ["sync", str(iid), "--wait"], ["retry", str(iid)],
            ["advance-cursor", str(iid)], ["timeline", str(iid)], ["list-failed-items", "--integration", str(iid)],
        ]
        item_verbs = [["retry-item", str(item)], ["skip-sync-item", str(item)]]
        for args in verbs + item_verbs:
            # per-verb --tenant, or the global option before the verb
            full = [*args, *scope] if scope else ["--tenant", "globex", *args]
            err = invoke(env, *full, code=1).stderr.strip()
            expected = f"integration {iid} not found" if args in verbs else f"sync item {item} not found"
            assert err == f"Error: {expected}", full
    # also from the environment
    assert "not found" in invoke(env | {"INTEGRATIONS_TENANT": "globex"}, "show", str(iid), code=1).stderr
    # listings of the other tenant are empty; prune and rotate-key leave the other tenant's rows alone
    assert invoke_json(env, "--tenant", "globex", "list") == []
    assert invoke_json(env, "--tenant", "globex", "status") == []
    assert invoke_json(env, "--tenant", "globex", "list-failed-items") == []
    assert invoke_json(env, "--tenant", "globex", "prune", "--days", "0")["sync_items_deleted"] == 0
    assert invoke_json(env, "--tenant", "globex", "rotate-key")["total"] == 0
    # and nothing was changed
    shown = invoke_json(env, "--tenant", "acme", "show", str(iid))
    assert (shown["enabled"], shown["tenant"]) == (True, "acme")
    assert invoke_json(env, "--tenant", "acme", "list-failed-items")[0]["status"] == "failed"
    assert invoke_json(env, "skip-sync-item", str(item), "--tenant", "acme")["item_status"] == "skipped"


def test_a_failed_sync_says_the_cursor_is_unchanged_not_null(env, poison, db_url):
    """A failed run records no cursor after it; the CLI says the cursor stayed, not ``-> null``."""
    iid = _synced(env, poison, items=20, bad=())
    store = Store.for_url(db_url)
    integ = store.get_integration(iid)
    assert integ.cursor is not None
    store.update_integration(iid, metadata={**integ.metadata, "items": 30, "fail_enumeration_after": 2})
    out = invoke(env, "sync", str(iid), "--wait", code=1).stdout
    assert f"cursor {json.dumps(integ.cursor)} (unchanged)" in out, out
    assert "-> null" not in out
    timeline = invoke(env, "timeline", str(iid)).stdout
    assert "-> null" not in timeline and "(unchanged)" in timeline
    assert store.get_integration(iid).cursor == integ.cursor


def test_sync_recovers_a_dagster_home_whose_first_start_was_killed(env, poison, db_url, home):
    """The kill -9 suite's start-up kill (CI 2026-12-02): a first ``sync`` killed while Dagster created
    its storage left ``history/runs/index.db`` empty; the documented recovery, ``sync ID --wait``, works."""
    iid = int(invoke(env, "add", "synthetic", "--name", "x", "--meta", "items=15").stdout)
    (home / "history" / "runs").mkdir(parents=True)
    (home / "history" / "runs" / "index.db").touch()
    out = invoke(env, "sync", str(iid), "--wait").stdout
    assert "success" in out, out
    assert Store.for_url(db_url).get_integration(iid).cursor == checkpoint_for(14)
