"""No database password and no credential reaches Dagster's storage or the UI (issue 9, point 7).

The real code location (``integrations_app.definitions``, the one ``workspace.yaml`` loads) with
``INTEGRATIONS_DATABASE_URL`` carrying a known password (PostgreSQL trusts local connections, so any
password works) and two integrations holding a known token (one of them a GitHub sync whose every
request sends it). Both sync through Dagster with the CLI (``integrations sync ID --wait``: runs
created with the workspace's origin, so the repository and job snapshots are stored); then a
``dagster-webserver`` on the same ``DAGSTER_HOME`` answers the GraphQL queries the UI makes for the
runs, their events, the jobs' config schemas and the resources. Neither secret may appear:

- in any file under ``DAGSTER_HOME`` (run, event-log and schedule storage, compute logs), also after
  decompressing every blob of every SQLite table (Dagster stores job snapshots zlib-compressed);
- in any job or execution-plan snapshot, read back through the instance;
- in any GraphQL answer.

The credentials' encryption key (``INTEGRATIONS_SECRET_KEY``) is searched for as well.

Before the fix ``build_definitions`` passed the URL to the resource as a literal, which Dagster
records as the default of the resource's ``database_url`` field in every job snapshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, serialize_value

from integrations_dagster.security.secrets import generate_key
from integrations_dagster.orchestration.resource import database_url_config, has_secret
from providers.github.fake_api import FakeGitHub

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "integrations"
PASSWORD = "pw-HCONFIG-n0t-in-dagster-7f3a9c"
TOKEN = "ghp_HCONFIG_token_0123456789abcdefXYZ"
PORTS = range(18400, 18450)

RUNS = """{ runsOrError { ... on Runs { results { runId status jobName runConfigYaml tags { key value }
  assetMaterializations { metadataEntries { label __typename } } } } } }"""
EVENTS = """query Events($runId: ID!) { logsForRun(runId: $runId) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message level stepKey }
    ... on ExecutionStepFailureEvent { error { message stack } }
    ... on RunFailureEvent { error { message } }
    ... on MaterializationEvent { metadataEntries { label __typename
      ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
      ... on MarkdownMetadataEntry { mdStr } ... on IntMetadataEntry { intValue } } } } } } }"""
REPOSITORIES = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  pipelines { name } } } } }"""
JOB = """query Job($selector: PipelineSelector!) { pipelineOrError(params: $selector) { __typename
  ... on Pipeline { name modes { name resources { name description
    configField { name defaultValueAsJson configType { key
      ... on CompositeConfigType { fields { name description defaultValueAsJson } } } } } } } } }"""
RESOURCES = """query Res($selector: RepositorySelector!) { allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
  __typename ... on ResourceDetailsList { results { name description
    configFields { name description defaultValueAsJson }
    configuredValues { key value type } } } } }"""


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {PORTS}")


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, _, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] or "postgres"
    return f"{scheme}://{user}:{PASSWORD}@{hostpart}"


def leaks_in_sqlite(path: Path, needles: list[bytes]) -> list[str]:
    """Every (table, column) of a SQLite file whose value, raw or zlib-decompressed, holds a needle."""
    found = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description]
            for row in cur:
                for col, value in zip(cols, row):
                    if isinstance(value, str):
                        value = value.encode("utf-8", "surrogatepass")
                    if not isinstance(value, bytes):
                        continue
                    texts = [value]
                    try:
                        texts.append(zlib.decompress(value))
                    except zlib.error:
                        pass
                    if any(n in t for t in texts for n in needles):
                        found.append(f"{path.name}:{table}.{col}")
    finally:
        conn.close()
    return found


def scan_home(home: Path, needles: list[bytes]) -> list[str]:
    found = []
    for p in home.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if any(n in data for n in needles):
            found.append(str(p.relative_to(home)))
        if data[:16] == b"SQLite format 3\x00":
            found += leaks_in_sqlite(p, needles)
    return found


def test_database_url_config_never_passes_a_password_literal(monkeypatch):
    from dagster import EnvVar

    url = "postgresql://app:s3cret@db.example/prod"
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", url)
    assert database_url_config(url) == EnvVar("INTEGRATIONS_DATABASE_URL")
    assert database_url_config(None) is None
    assert database_url_config("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert database_url_config("postgresql://postgres@127.0.0.1/test") == "postgresql://postgres@127.0.0.1/test"
    # a URL with a password set in code, not in the environment: exported under a derived name
    other = "postgresql://app:other-secret@db.example/prod"
    value = database_url_config(other)
    assert isinstance(value, EnvVar) and value != EnvVar("INTEGRATIONS_DATABASE_URL")
    assert value.get_value() == other and "other-secret" not in value.env_var_name
    assert has_secret("postgresql://db.example/prod?password=x") and not has_secret("sqlite:///a.db")


@pytest.fixture
def setting(pg_url: str, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DAGSTER_HOME": str(home),
        "INTEGRATIONS_DATABASE_URL": with_password(pg_url),
        "INTEGRATIONS_DEFINITIONS": "integrations_app.definitions:defs",
        "INTEGRATIONS_WORKSPACE": str(ROOT / "workspace.yaml"),
        "INTEGRATIONS_SECRET_KEY": generate_key(),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    env.pop("INTEGRATIONS_TENANT", None)
    return {"home": home, "env": env, "tmp": tmp_path}


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    proc = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert PASSWORD not in proc.stdout + proc.stderr and TOKEN not in proc.stdout + proc.stderr
    return proc.stdout


def graphql(url: str, query: str, variables: dict | None = None) -> tuple[dict, str]:
    resp = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=120)
    resp.raise_for_status()
    body = resp.json()
    assert not body.get("errors"), body["errors"]
    return body["data"], resp.text


def test_no_password_or_token_in_dagster_storage_or_graphql(setting, monkeypatch):
    env, home = setting["env"], setting["home"]
    with FakeGitHub(issues=150, token=TOKEN) as fake:
        gh = cli(env, "add", "github", "--name", "gh", "--meta", f"owner={fake.owner}", "--meta", f"repo={fake.repo}",
                 "--meta", f"base_url={fake.url}", "--meta", "since=2000-01-01T00:00:00Z",
                 "--secret", f"token={TOKEN}").strip()
        syn = cli(env, "add", "synthetic", "--name", "syn", "--meta", "items=20", "--secret", f"token={TOKEN}").strip()
        import json

        for iid, items in ((gh, 150), (syn, 20)):
            result = json.loads(cli(env, "sync", iid, "--wait", "--json"))
            assert (result["status"], result["dagster_status"], result["total"]) == ("success", "SUCCESS", items)

    key = env["INTEGRATIONS_SECRET_KEY"]  # the credentials' encryption key is a secret too
    needles = [PASSWORD.encode(), TOKEN.encode(), key.encode()]
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    try:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.remote_job_origin is not None for r in runs)
        for run in runs:
            snaps = [instance.get_job_snapshot(run.job_snapshot_id)]
            if run.execution_plan_snapshot_id:
                snaps.append(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
            text = "".join(serialize_value(s) for s in snaps) + serialize_value(run)
            assert "database_url" in text  # the resource's field is in the snapshot ...
            assert PASSWORD not in text and TOKEN not in text and key not in text  # ... its value is not
            logs = "".join(serialize_value(e) for e in instance.all_logs(run.run_id))
            assert PASSWORD not in logs and TOKEN not in logs and key not in logs
    finally:
        instance.dispose()

    # the UI's answers, from a webserver on this DAGSTER_HOME
    port = free_port()
    log = open(setting["tmp"] / "webserver.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    answers: list[str] = []
    try:
        deadline = time.monotonic() + 180
        repos = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (setting["tmp"] / "webserver.log").read_text()[-3000:]
            try:
                data, text = graphql(url, REPOSITORIES)
                nodes = data["repositoriesOrError"]["nodes"]
                if nodes:
                    repos, _ = nodes, answers.append(text)
                    break
            except (httpx.HTTPError, KeyError, TypeError):
                pass
            time.sleep(1)
        assert repos, (setting["tmp"] / "webserver.log").read_text()[-3000:]
        data, text = graphql(url, RUNS)
        answers.append(text)
        run_ids = [r["runId"] for r in data["runsOrError"]["results"]]
        assert len(run_ids) == 2
        for run_id in run_ids:
            data, text = graphql(url, EVENTS, {"runId": run_id})
            assert data["logsForRun"]["__typename"] == "EventConnection"
            answers.append(text)
        seen_field = False
        for repo in repos:
            selector = {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}
            data, text = graphql(url, RESOURCES, {"selector": selector})
            answers.append(text)
            values = {r["name"]: r["configuredValues"] for r in data["allTopLevelResourceDetailsOrError"]["results"]}
            assert {"key": "database_url", "value": "INTEGRATIONS_DATABASE_URL", "type": "ENV_VAR"} in values["integrations"]
            for job in repo["pipelines"]:
                data, text = graphql(url, JOB, {"selector": {**selector, "pipelineName": job["name"]}})
                answers.append(text)
                seen_field = seen_field or "database_url" in text
        assert seen_field
    finally:
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    joined = "\n".join(answers)
    assert PASSWORD not in joined and TOKEN not in joined and key not in joined
    assert scan_home(home, needles) == []
