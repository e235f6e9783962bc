"""Account setup (CORE's SETUP event): an OAuth callback becomes an integration, named after the
account's GitHub identity, credentials encrypted, with its schedule and tenant; Python and CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from dagster import DagsterRunStatus

from integrations_dagster import IntegrationsError, execute_sync
from integrations_dagster.cli import cli
from integrations_dagster.operations.connect import connect
from integrations_dagster.security.secrets import generate_key
from integrations_dagster.store.credentials import read_credentials
from providers.github.fake_api import FakeGitHub
from tests.test_github import count, ref
from providers.github.tables import github_issues

TOKEN = "gho_connectTOKEN42"


@pytest.fixture(autouse=True)
def _key(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_SECRET_KEY", generate_key())
    monkeypatch.delenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", raising=False)


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=40, token=TOKEN, login="mona") as server:
        yield server


def engine(db_url: str):  # type: ignore[no-untyped-def]
    from integrations_dagster.orchestration.code_location import engine_of
    from tests.support import gh_app

    return engine_of(gh_app.make_defs(db_url))


def test_connect_from_an_oauth_callback_then_sync(store, db_url, fake, dagster_instance):  # type: ignore[no-untyped-def]
    integ = connect(store, engine=engine(db_url), provider_key="github",
                    callback={"access_token": TOKEN, "token_type": "bearer", "scope": "repo"},
                    metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url,
                              "since": "2000-01-01T00:00:00Z"},
                    cron="*/5 * * * *", tenant="acme-corp")
    assert integ.name == f"mona: {fake.owner}/{fake.repo}" and integ.tenant == "acme-corp"
    assert integ.sync_cron == "*/5 * * * *" and integ.metadata["login"] == "mona"
    assert store.get_integration(integ.id, tenant="acme-corp").credentials == {"token": TOKEN}
    with store.engine.connect() as conn:
        raw = read_credentials(conn, integ.id) or ""
    assert raw.startswith("fernet:") and TOKEN not in raw
    with pytest.raises(Exception):
        store.get_integration(integ.id, tenant="other")  # tenant-scoped
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS and count(store, github_issues, integ.id) == 40


def test_an_expiring_user_token_is_stored_refreshable(store, db_url, fake):  # type: ignore[no-untyped-def]
    integ = connect(store, engine=engine(db_url), provider_key="github_activity",
                    callback={"access_token": TOKEN, "refresh_token": "ghr_r1", "expires_in": 28800,
                              "client_secret": "cs-1"},
                    metadata={"base_url": fake.url, "client_id": "Iv1.abc"}, interval_minutes=15)
    creds = store.get_integration(integ.id).credentials
    assert creds["refresh_token"] == "ghr_r1" and creds["client_id"] == "Iv1.abc" and creds["client_secret"] == "cs-1"
    assert creds["token_url"] == "https://github.com/login/oauth/access_token"
    expires = datetime.fromisoformat(creds["expires_at"])
    assert timedelta(hours=7) < expires - datetime.now(timezone.utc) <= timedelta(hours=8)
    assert integ.metadata["username"] == "mona" and integ.sync_interval_minutes == 15
    assert "client_id" not in integ.metadata


def test_an_app_installation_is_checked_by_one_exchange(store, db_url, fake):  # type: ignore[no-untyped-def]
    key = fake.enable_app(app_id=5, installation_id=6)
    integ = connect(store, engine=engine(db_url), provider_key="github",
                    callback={"installation_id": 6, "app_id": 5, "private_key": key},
                    metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url})
    creds = store.get_integration(integ.id).credentials
    assert creds["installation_token"] in fake.installation_tokens
    with pytest.raises(IntegrationsError, match="check the app id and private key"):
        connect(store, engine=engine(db_url), provider_key="github",
                callback={"installation_id": 999, "app_id": 5, "private_key": key},
                metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url})
    assert len(store.list_integrations()) == 1


def test_a_refused_token_or_missing_metadata_stores_nothing(store, db_url, fake):  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrationsError, match="GitHub refused the new token"):
        connect(store, engine=engine(db_url), provider_key="github", callback={"access_token": "wrong"},
                metadata={"owner": "a", "repo": "b", "base_url": fake.url})
    with pytest.raises(IntegrationsError, match="metadata is missing repo"):
        connect(store, engine=engine(db_url), provider_key="github", callback={"access_token": TOKEN},
                metadata={"owner": "a", "base_url": fake.url})
    with pytest.raises(IntegrationsError, match="access_denied"):
        connect(store, engine=engine(db_url), provider_key="github", callback={"error": "access_denied"},
                metadata={"owner": "a", "repo": "b", "base_url": fake.url})
    assert store.list_integrations() == []


def test_cli_connect(store, db_url, fake, tmp_path):  # type: ignore[no-untyped-def]
    cb = tmp_path / "callback.json"
    cb.write_text(json.dumps({"access_token": TOKEN, "token_type": "bearer"}))
    env = {"INTEGRATIONS_DATABASE_URL": db_url, "INTEGRATIONS_DEFINITIONS": "tests.support.gh_app:make_defs_default"}
    args = ["connect", "github", "--callback", str(cb), "--meta", f"owner={fake.owner}", "--meta", f"repo={fake.repo}",
            "--meta", f"base_url={fake.url}", "--cron", "0 * * * *", "--tenant", "t1", "--json"]
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["name"] == f"mona: {fake.owner}/{fake.repo}" and shown["tenant"] == "t1"
    assert TOKEN not in result.output
    bad = CliRunner().invoke(cli, ["connect", "github", "--callback", str(tmp_path / "none.json")], env=env)
    assert bad.exit_code == 1 and "cannot read --callback" in bad.output
