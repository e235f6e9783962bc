"""GitHub App installations: JWT -> installation token against the fake GitHub, cached encrypted and
shared by every run; the GitHub providers sync with an app installation (both databases)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import jwt
import pytest
from dagster import DagsterRunStatus

from integrations_dagster import execute_sync
from integrations_dagster.security.secrets import generate_key
from integrations_dagster.store.credentials import read_credentials
from providers.github.app import GitHubAppStrategy, app_jwt
from providers.github.fake_api import FakeGitHub
from providers.github.tables import activities, github_issues
from tests.test_github import count, latest, ref


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_SECRET_KEY", generate_key())
    monkeypatch.delenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", raising=False)


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=250, token="not-used-here") as server:
        server.private_key = server.enable_app(app_id=4242, installation_id=777)
        yield server


def app_credentials(fake: FakeGitHub, **over):  # type: ignore[no-untyped-def]
    return {"app_id": fake.app_id, "installation_id": fake.installation_id, "private_key": fake.private_key, **over}


def exchanges(fake: FakeGitHub) -> int:
    return sum(1 for method, path in fake.requests if method == "POST" and path.startswith("/app/installations/"))


def gh_integration(store, fake, provider_key: str = "github", **over):  # type: ignore[no-untyped-def]
    meta = {"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"}
    if provider_key == "github_activity":
        meta["username"] = fake.login
    return store.create_integration(provider_key=provider_key, name="app", metadata=meta,
                                    credentials=app_credentials(fake, **over))


def test_the_fake_verifies_the_app_jwt_like_github(fake):  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc)
    url = f"{fake.url}/app/installations/{fake.installation_id}/access_tokens"

    def post(token: str) -> httpx.Response:
        return httpx.post(url, headers={"Authorization": f"Bearer {token}"})

    good = post(app_jwt(fake.app_id, fake.private_key, now))
    assert good.status_code == 201 and good.json()["token"].startswith("ghs_")
    other_key = FakeGitHub.enable_app(FakeGitHub.__new__(FakeGitHub))  # a key GitHub does not know
    assert post(app_jwt(fake.app_id, other_key, now)).status_code == 401
    assert post(app_jwt(999, fake.private_key, now)).status_code == 401  # wrong app id (iss)
    assert post(app_jwt(fake.app_id, fake.private_key, now - timedelta(hours=1))).status_code == 401  # expired
    too_long = jwt.encode({"iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600, "iss": str(fake.app_id)},
                          fake.private_key, algorithm="RS256")
    assert post(too_long).status_code == 401
    wrong_installation = httpx.post(f"{fake.url}/app/installations/1/access_tokens",
                                    headers={"Authorization": f"Bearer {app_jwt(fake.app_id, fake.private_key, now)}"})
    assert wrong_installation.status_code == 404
    # the installation token works on the API, a JWT does not
    assert httpx.get(f"{fake.url}/user", headers={"Authorization": f"Bearer {good.json()['token']}"}).status_code == 200
    assert httpx.get(f"{fake.url}/user", headers={"Authorization": f"Bearer {app_jwt(fake.app_id, fake.private_key, now)}"}).status_code == 401


def test_issues_sync_with_an_app_installation_and_the_token_is_cached_encrypted(store, db_url, fake, dagster_instance):  # type: ignore[no-untyped-def]
    integ = gh_integration(store, fake)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert count(store, github_issues, integ.id) == 250
    assert exchanges(fake) == 1
    creds = store.get_integration(integ.id).credentials
    assert creds["installation_token"] in fake.installation_tokens
    with store.engine.connect() as conn:
        raw = read_credentials(conn, integ.id) or ""
    assert raw.startswith("fernet:") and creds["installation_token"] not in raw
    fake.bump(5)
    run2 = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run2.status == DagsterRunStatus.SUCCESS
    assert exchanges(fake) == 1  # the second run used the cached token
    assert 5 <= latest(store, integ.id)["items_total"] <= 6  # the changed ones (+ the one at the cursor)


def test_a_token_close_to_expiry_or_refused_is_exchanged_again(store, db_url, fake, dagster_instance):  # type: ignore[no-untyped-def]
    integ = gh_integration(store, fake)
    execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    creds = store.get_integration(integ.id).credentials
    soon = (datetime.now(timezone.utc) + timedelta(minutes=2)).isoformat()  # inside the 5-minute margin
    store.update_integration(integ.id, credentials={**creds, "installation_token_expires_at": soon})
    fake.bump(3)
    assert execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    assert exchanges(fake) == 2
    fake.expire_installation_tokens()  # GitHub revoked it early: a 401, one new exchange, the run goes on
    fake.bump(2)
    assert execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    assert exchanges(fake) == 3
    assert latest(store, integ.id)["status"] == "success"


def test_activity_provider_runs_with_an_app_installation(store, db_url, fake, dagster_instance):  # type: ignore[no-untyped-def]
    integ = gh_integration(store, fake, "github_activity")
    run = execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert count(store, activities, integ.id) == 50 + 90
    assert exchanges(fake) == 1


def test_a_wrong_private_key_fails_as_an_authentication_failure_saying_what_to_do(store, db_url, fake, dagster_instance):  # type: ignore[no-untyped-def]
    other_key = FakeGitHub.enable_app(FakeGitHub.__new__(FakeGitHub))
    integ = gh_integration(store, fake, private_key=other_key)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = latest(store, integ.id)
    assert sr["status"] == "failed" and sr["auth_failure"] is True
    assert "check the app id and private key" in sr["error"]
    assert store.get_integration(integ.id).consecutive_auth_failures == 1


def test_missing_app_fields_are_named():  # type: ignore[no-untyped-def]
    from integrations_dagster import CredentialsError

    strategy = GitHubAppStrategy("http://127.0.0.1:1")
    with pytest.raises(CredentialsError, match="missing field.*private_key"):
        strategy.refresh({"app_id": 1, "installation_id": 2}, datetime.now(timezone.utc))
    with pytest.raises(CredentialsError, match="'private_key' is not a PEM"):
        app_jwt(1, "not a key", datetime.now(timezone.utc))
