"""OAuth2 in the HTTP layer, both databases, against a real local token endpoint and API
(``integrations_dagster.testing.fake_oauth``): refresh before expiry, once on a 401, rotation
stored encrypted, refusal -> authentication failure with what to do, slow endpoint, and two
processes refreshing one integration at once -> one refresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrations_dagster import SyncSettings
from integrations_dagster.authoring.context import build_client, http_factory_for
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.errors import CredentialsError
from integrations_dagster.security.oauth2 import RefreshRefused
from integrations_dagster.security.secrets import generate_key
from integrations_dagster.store.credentials import read_credentials
from integrations_dagster.testing.fake_oauth import FakeOAuthAPI
from tests.support.oauth_app import OAuthDemoProvider

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_SECRET_KEY", generate_key())
    monkeypatch.delenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", raising=False)


@pytest.fixture
def api():  # type: ignore[no-untyped-def]
    with FakeOAuthAPI() as server:
        yield server


def make(store, api, **kw):  # type: ignore[no-untyped-def]
    return store.create_integration(provider_key="oauth_demo", name="o", metadata={"base_url": api.url},
                                    credentials=api.credentials(**kw))


def raw_credentials(store, integration_id: int) -> str:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return read_credentials(conn, integration_id) or ""


def get_items(store, integration_id: int):  # type: ignore[no-untyped-def]
    client = build_client(store, OAuthDemoProvider(), store.get_integration(integration_id), None)
    try:
        return client.get_json("/items"), client
    finally:
        client.close()


def enumerate_once(engine, store, integration_id: int, run_id: int):  # type: ignore[no-untyped-def]
    integ = store.get_integration(integration_id)
    factory = http_factory_for(engine, store, engine.provider(integ.provider_key), integ, run_id)
    return engine.enumerate(store, integ, run_id, http_factory=factory)


def test_a_valid_token_is_used_without_refreshing(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api)
    body, _ = get_items(store, integ.id)
    assert len(body["items"]) == 5 and api.refreshes == 0


def test_refreshes_before_expiry_and_stores_the_rotated_tokens_encrypted(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api, expires_in=30)  # inside the 60 s margin: due now
    old = store.get_integration(integ.id).credentials
    body, client = get_items(store, integ.id)
    assert len(body["items"]) == 5
    assert (api.refreshes, api.unauthorized, api.reused) == (1, 0, 0)
    new = store.get_integration(integ.id).credentials
    assert new["access_token"] != old["access_token"] and new["refresh_token"] != old["refresh_token"]
    assert new["client_secret"] == old["client_secret"] and new["token_url"] == old["token_url"]
    stored = raw_credentials(store, integ.id)
    assert stored.startswith("fernet:")
    assert new["access_token"] not in stored and new["refresh_token"] not in stored
    assert new["access_token"] in client.secrets  # scrubbed from logs like the first token
    # the next client (another run) uses the stored token: no second refresh
    get_items(store, integ.id)
    assert api.refreshes == 1


def test_a_401_refreshes_once_and_retries_the_request(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api)
    api.expire_access_tokens()  # the API says expired before our clock does
    body, _ = get_items(store, integ.id)
    assert len(body["items"]) == 5
    assert (api.refreshes, api.unauthorized) == (1, 1)


def test_a_run_with_a_stale_copy_adopts_the_token_another_run_stored(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api, expires_in=30)
    stale = store.get_integration(integ.id)  # loaded before the other run refreshed
    get_items(store, integ.id)
    assert api.refreshes == 1
    client = build_client(store, OAuthDemoProvider(), stale, None)
    try:
        assert len(client.get_json("/items")["items"]) == 5
    finally:
        client.close()
    assert (api.refreshes, api.reused) == (1, 0)  # the old refresh token was never sent again


def test_a_refused_refresh_fails_the_run_as_an_authentication_failure_saying_what_to_do(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api, expires_in=0)
    api.refuse = True
    engine = SyncEngine(providers=[OAuthDemoProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with pytest.raises(RefreshRefused, match="connect the account again"):
        enumerate_once(engine, store, integ.id, start.run_id)
    run = store.get_run(start.run_id)
    assert run["status"] == "failed" and run["auth_failure"] is True
    assert "connect the account again" in run["error"]
    after = store.get_integration(integ.id)
    assert after.consecutive_auth_failures == 1 and after.health == "degraded"
    assert after.credentials["refresh_token"]  # nothing was lost: a reconnect replaces them
    start2 = engine.start_run(store, integ.id, dagster_run_id=None)
    with pytest.raises(RefreshRefused):
        enumerate_once(engine, store, integ.id, start2.run_id)
    assert store.get_integration(integ.id).health == "failing"  # 2 auth failures in a row


def test_a_slow_token_endpoint_fails_plainly_and_keeps_the_old_tokens(store, api):  # type: ignore[no-untyped-def]
    integ = make(store, api, expires_in=0)
    before = store.get_integration(integ.id).credentials
    api.delay = 1.5
    provider = OAuthDemoProvider()
    auth = provider.http_auth(store.get_integration(integ.id))
    auth.strategy.timeout = 0.3
    auth.bind(store, integ.id)
    import httpx

    with httpx.Client(base_url=api.url, auth=auth) as http, pytest.raises(CredentialsError, match="did not answer"):
        http.get("/items")
    assert not isinstance(CredentialsError("x"), RefreshRefused)  # not an auth failure: retried next run
    assert store.get_integration(integ.id).credentials == before
    api.delay = 0.0
    body, _ = get_items(store, integ.id)  # the refresh token was not spent by the timed-out call
    assert len(body["items"]) == 5


def test_two_processes_refreshing_one_integration_at_once_refresh_once(store, db_url, api, tmp_path):  # type: ignore[no-untyped-def]
    integ = make(store, api, expires_in=0)
    api.delay = 1.0  # a slow endpoint: both processes are inside the refresh window together
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_DISABLE_TELEMETRY": "yes"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.support.oauth_app", db_url, str(integ.id), str(go)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    import time

    time.sleep(3.0)  # both imported and waiting for GO
    go.write_text("go")
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["items"] for o in outs] == [5, 5]
    assert api.refreshes == 1 and api.reused == 0 and api.refused == 0
    assert sorted(o["refreshes"] for o in outs) == [0, 1]
