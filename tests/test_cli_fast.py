"""The CLI's verbs that run no job never import Dagster (issue 12, point 4).

Each verb runs in a fresh interpreter (a subprocess: nothing imported by the test process counts) that
reports, after the verb returned, whether ``dagster`` (or any ``dagster.*`` / ``dagster_*`` module) is
in ``sys.modules``. The public API stays importable: every name in ``__all__`` resolves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import integrations_dagster
from integrations_dagster.security.secrets import generate_key

ROOT = Path(__file__).resolve().parents[1]

#: Runs the CLI's ``main`` with the given argv, then prints which Dagster modules were imported on fd 3's
#: stand-in (a marker line on stderr), whatever the verb's exit code.
PROBE = r"""
import json, sys
argv = json.loads(sys.argv[1])
sys.argv = ["integrations", *argv]
code = 0
try:
    from integrations_dagster.cli import main
    main(argv)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
loaded = sorted(m for m in sys.modules if m == "dagster" or m.startswith(("dagster.", "dagster_")))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "alembic", "pydantic", "pydantic_settings", "httpx", "rich"})
sys.stderr.write("\nPROBE " + json.dumps({"code": code, "dagster": loaded, "heavy": heavy}) + "\n")
"""


def probe_all(env: dict[str, str], *argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argv))], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    marker = [line for line in proc.stderr.splitlines() if line.startswith("PROBE ")]
    assert marker, f"{argv}: no probe line\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return {**json.loads(marker[-1][len("PROBE "):]), "stdout": proc.stdout, "stderr": proc.stderr}


def probe(env: dict[str, str], *argv: str) -> tuple[int, list[str], str, str]:
    data = probe_all(env, *argv)
    return data["code"], data["dagster"], data["stdout"], data["stderr"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs", "INTEGRATIONS_SECRET_KEY": generate_key(),
           "DAGSTER_DISABLE_TELEMETRY": "yes"}
    env.pop("INTEGRATIONS_TENANT", None)
    return env


def test_verbs_without_a_job_do_not_import_dagster(env):
    code, loaded, out, err = probe(env, "add", "synthetic", "--name", "fast", "--meta", "items=3")
    assert (code, loaded) == (0, []), err
    iid = out.strip()
    assert iid.isdigit()
    verbs = [
        (["--help"], 0), (["status", "--help"], 0), (["sync", "--help"], 0),
        (["list"], 0), (["list", "--json"], 0), (["show", iid], 0),
        (["status"], 0), (["status", iid], 0), (["status", iid, "--json"], 0),
        (["list-failed-items"], 0), (["timeline", iid], 0),
        (["disable", iid, "--reason", "maintenance"], 0), (["enable", iid], 0),
        (["advance-cursor", iid], 0), (["skip-sync-item", "999999", "--reason", "gone"], 1),
        (["prune", "--days", "30"], 0), (["generate-key"], 0),
        (["list-failed-mutations"], 0), (["list-failed-mutations", "--json"], 0),
        (["retry-mutation", "--integration", iid], 1), (["skip-mutation", "999999"], 1),
        (["retry-item", "999999"], 1), (["remove", "999999"], 1), (["db", "upgrade"], 0),
    ]
    #: Listings read the store only: they do not load the engine (httpx, rich, the listeners' machinery).
    listings = {"list", "show", "timeline", "list-failed-items", "list-failed-mutations"}
    for argv, expected in verbs:
        data = probe_all(env, *argv)
        code, loaded, out, err = data["code"], data["dagster"], data["stdout"], data["stderr"]
        assert code == expected, f"{argv}: exit {code}\n{out}\n{err[-2000:]}"
        assert loaded == [], f"`integrations {' '.join(argv)}` imported Dagster: {loaded[:5]}"
        assert "Traceback" not in err, err
        if argv[0] in listings:
            assert not {"httpx", "rich"} & set(data["heavy"]), f"`integrations {' '.join(argv)}`: {data['heavy']}"
    # the data the fast path read is the real data
    code, _, out, _ = probe(env, "status", iid, "--json")
    assert [r["id"] for r in json.loads(out)] == [int(iid)]


def test_a_verb_that_runs_a_job_still_gets_real_definitions(env):
    """``sync`` (no ``--wait``: queue or run) loads real Definitions after the engine-only fast path."""
    code, _, out, err = probe(env, "add", "synthetic", "--name", "job", "--meta", "items=2")
    assert code == 0, err
    code, loaded, out, err = probe(env, "sync", out.strip(), "--wait", "--json")
    assert code == 0, err
    assert "dagster" in loaded
    assert json.loads(out)["status"] == "success"


def test_every_public_name_resolves_lazily():
    code = ("import sys, integrations_dagster as m; assert 'dagster' not in sys.modules; "
            "[getattr(m, n) for n in m.__all__]; print(sorted(set(m.__all__) - set(dir(m))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    for name in integrations_dagster.__all__:
        assert getattr(integrations_dagster, name) is not None
    with pytest.raises(AttributeError):
        integrations_dagster.no_such_name  # noqa: B018
    from integrations_dagster import Provider, build_definitions  # noqa: F401
    with pytest.raises(AttributeError, match="SyncEngine is internal.*integrations_dagster.engine.engine"):
        integrations_dagster.SyncEngine  # noqa: B018


def test_cli_default_prune_days_matches_the_operations():
    from integrations_dagster import cli
    from integrations_dagster.operations import actions as _operations

    assert cli.DEFAULT_PRUNE_DAYS == _operations.DEFAULT_PRUNE_DAYS
    import datetime

    sample = {"b": [1, None], "a": datetime.datetime(2024, 1, 1), "c": "é"}
    assert json.dumps(sample, indent=2, sort_keys=True, default=str) == _operations.dumps(sample)  # cli._emit_json


def _populate(db_url: str) -> int:
    """Integrations with a partial run (a failed item), a cursor, an unfinished run and another tenant."""
    from integrations_dagster import Store, SyncSettings
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from integrations_dagster.engine.engine import SyncEngine
    from providers.synthetic import SyntheticItem, SyntheticProvider

    def fail_poisoned(event: SyntheticItem) -> None:
        if event.poisoned:
            raise ValueError(f"poisoned {event.external_id}")

    store = Store.for_url(db_url)
    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry.build([(SyntheticItem, fail_poisoned)]),
                        settings=SyncSettings(item_backoff=[0], item_tries=1))
    synced = store.create_integration(provider_key="synthetic", name="synced", metadata={
        "items": 5, "fail_external_ids": ["item-3"]})
    start = engine.start_run(store, synced.id, dagster_run_id="dagster-run-1")
    res = engine.enumerate(store, store.get_integration(synced.id), start.run_id)
    for chunk in range(res.chunks):
        engine.process_chunk(store, start.run_id, chunk)
    engine.reconcile(store, start.run_id)
    pending = store.create_integration(provider_key="synthetic", name="enumerated", metadata={"items": 4})
    start = engine.start_run(store, pending.id, dagster_run_id=None)
    engine.enumerate(store, store.get_integration(pending.id), start.run_id)  # items pending, run processing
    store.create_integration(provider_key="synthetic", name="other tenant", tenant="acme")
    store.update_integration(pending.id, enabled=False, health="disabled")
    return synced.id


def test_status_on_a_migrated_database_reads_without_sqlalchemy_and_answers_like_the_full_path(env, db_url):
    """``integrations status`` answers from the DB-API driver (store/quick.py): no SQLAlchemy, no pydantic, the
    same rows as the full path, for every filter, on both databases."""
    from integrations_dagster import Store
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.store import quick

    synced = _populate(db_url)
    store = Store.for_url(db_url)
    for iid, tenant in ((None, None), (synced, None), (None, "acme"), (None, "default"), (synced, "acme")):
        try:
            full = ops.status_rows(store, integration_id=iid, tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - compared with the quick path's error below
            with pytest.raises(type(exc), match=str(exc)):
                quick.status_rows(db_url, integration_id=iid, tenant=tenant)
            continue
        assert quick.status_rows(db_url, integration_id=iid, tenant=tenant) == full
    rows = ops.status_rows(store)
    assert [(r["pending_items"], r["failed_items"]) for r in rows] == [(0, 1), (4, 0), (0, 0)]
    assert rows[0]["cursor"] is not None and rows[0]["last_dagster_run_id"] == "dagster-run-1"
    for argv in (["status"], ["status", "--json"], ["status", str(synced), "--json"], ["--help"], ["status", "--help"]):
        data = probe_all(env, *argv)
        assert data["code"] == 0, data["stderr"][-2000:]
        assert (data["dagster"], data["heavy"]) == ([], []), f"`integrations {' '.join(argv)}` imported {data['heavy']}"
    assert json.loads(probe_all(env, "status", "--json")["stdout"]) == json.loads(ops.dumps(rows))
    missing = probe_all(env, "status", "999999")
    assert missing["code"] == 1 and "integration 999999 not found" in missing["stderr"]


def test_status_on_a_database_not_at_head_takes_the_full_path(env, tmp_path):
    from integrations_dagster.store import quick

    fresh = f"sqlite:///{tmp_path}/fresh/new.sqlite"
    assert quick.status_rows(fresh) is None  # no file yet: nothing to read, the full path migrates
    data = probe_all({**env, "INTEGRATIONS_DATABASE_URL": fresh}, "status", "--json")
    assert data["code"] == 0 and json.loads(data["stdout"]) == [] and "sqlalchemy" in data["heavy"]
    assert quick.status_rows(fresh) == []  # now at head: the quick path answers
    assert quick.status_rows("mysql://nobody@127.0.0.1/x") is None


def test_list_on_a_migrated_database_reads_without_sqlalchemy_and_answers_like_the_full_path(env, db_url, monkeypatch):
    """``integrations list`` answers from the DB-API driver too (store/quick.py): the same rows as
    ``operations.list_integrations`` for every tenant filter, on both databases, importing none of
    SQLAlchemy, pydantic, httpx or rich."""
    from integrations_dagster import Store
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.store import quick

    _populate(db_url)
    store = Store.for_url(db_url)
    monkeypatch.setenv("INTEGRATIONS_SECRET_KEY", env["INTEGRATIONS_SECRET_KEY"])
    store.create_integration(provider_key="synthetic", name="with a secret", credentials={"token": "t0ken"},
                             metadata={"items": 2, "nested": {"a": [1, "b"]}}, sync_cron="*/5 * * * *")
    for tenant in (None, "acme", "default", "nobody"):
        assert quick.list_integrations(db_url, tenant=tenant) == ops.list_integrations(store, tenant=tenant)
    rows = ops.list_integrations(store)
    assert [r["has_credentials"] for r in rows][-1] is True and rows[-1]["metadata"]["nested"] == {"a": [1, "b"]}
    for argv in (["list"], ["list", "--json"], ["list", "--tenant", "acme", "--json"]):
        data = probe_all(env, *argv)
        assert data["code"] == 0, data["stderr"][-2000:]
        assert (data["dagster"], data["heavy"]) == ([], []), f"`integrations {' '.join(argv)}` imported {data['heavy']}"
    assert json.loads(probe_all(env, "list", "--json")["stdout"]) == json.loads(ops.dumps(rows))
    assert "t0ken" not in probe_all(env, "list", "--json")["stdout"]


def test_list_failed_items_on_a_migrated_database_reads_without_sqlalchemy_like_the_full_path(env, db_url):
    """``integrations list-failed-items`` from the DB-API driver (store/quick.py): the same rows as
    ``operations.list_failed_items`` and the same outbox count as ``list_failed_mutations``, for every
    filter (not found alike), on both databases, importing none of the heavy packages."""
    from integrations_dagster import Store
    from integrations_dagster.engine.push import Decision, MutationStatus
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.store import quick
    from integrations_dagster.store.outbox import Outbox

    synced = _populate(db_url)
    store = Store.for_url(db_url)
    box = Outbox(store)
    for key in ("1", "2"):
        box.record_now(synced, entity="task", key=key, operation="create", payload={"title": ""})
    first = box.eligible(synced, limit=10)[0]
    box.record_outcomes({first.id: Decision(MutationStatus.FAILED, reason="validation_failed")})
    cases = ((None, None), (synced, None), (None, "acme"), (None, "default"), (synced, "acme"), (999999, None))
    for iid, tenant in cases:
        try:
            full = ops.list_failed_items(store, integration_id=iid, tenant=tenant)
            n = len(ops.list_failed_mutations(store, integration_id=iid, tenant=tenant))
        except Exception as exc:  # noqa: BLE001 - compared with the quick path's error below
            with pytest.raises(type(exc), match=str(exc)):
                quick.failed_items(db_url, integration_id=iid, tenant=tenant)
            continue
        assert quick.failed_items(db_url, integration_id=iid, tenant=tenant) == (full, n), (iid, tenant)
    rows, n = quick.failed_items(db_url)
    assert [r["external_id"] for r in rows] == ["item-3"] and n == 1
    for argv in (["list-failed-items"], ["list-failed-items", "--json"], ["list-failed-items", "--integration", str(synced)]):
        data = probe_all(env, *argv)
        assert data["code"] == 0, data["stderr"][-2000:]
        assert (data["dagster"], data["heavy"]) == ([], []), f"`integrations {' '.join(argv)}` imported {data['heavy']}"
    text = probe_all(env, "list-failed-items")["stdout"]
    assert "item-3" in text and "also 1 failed or conflicting outbox mutation(s)" in text
    assert json.loads(probe_all(env, "list-failed-items", "--json")["stdout"]) == json.loads(ops.dumps(rows))
    missing = probe_all(env, "list-failed-items", "--integration", "999999")
    assert missing["code"] == 1 and "integration 999999 not found" in missing["stderr"]


def test_show_on_a_migrated_database_reads_without_sqlalchemy_like_the_full_path(env, db_url):
    """``integrations show ID`` from the DB-API driver (store/quick.py): the same integration and recent
    runs as ``operations.show_integration`` (not found alike), on both databases."""
    from integrations_dagster import Store
    from integrations_dagster.operations import actions as ops
    from integrations_dagster.store import quick

    synced = _populate(db_url)
    store = Store.for_url(db_url)
    ids = [r["id"] for r in ops.list_integrations(store)]
    for iid, tenant in [*((i, None) for i in ids), (synced, "default"), (synced, "acme"), (999999, None)]:
        try:
            full = ops.show_integration(store, iid, tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - compared with the quick path's error below
            with pytest.raises(type(exc), match=str(exc)):
                quick.show_integration(db_url, iid, tenant=tenant)
            continue
        assert quick.show_integration(db_url, iid, tenant=tenant) == full, (iid, tenant)
    assert ops.show_integration(store, synced)["recent_runs"][0]["failed"] == 1
    for argv in (["show", str(synced)], ["show", str(synced), "--json"]):
        data = probe_all(env, *argv)
        assert data["code"] == 0, data["stderr"][-2000:]
        assert (data["dagster"], data["heavy"]) == ([], []), f"`integrations {' '.join(argv)}` imported {data['heavy']}"
    assert json.loads(probe_all(env, "show", str(synced), "--json")["stdout"]) == json.loads(
        ops.dumps(ops.show_integration(store, synced)))
    missing = probe_all(env, "show", "999999")
    assert missing["code"] == 1 and "integration 999999 not found" in missing["stderr"]
