"""Account setup through OAuth (issue 14 point 3): the authorization URL is built from the
provider's OAuth2 declaration (client id, scopes, state, PKCE S256), the callback's code and state
become tokens through the token URL (fake token endpoint: testing/fake_oauth.py) and then an
integration (identity from the fake GitHub's /user, name, encrypted credentials, schedule, tenant).
Python and CLI; a forged or stale state, a declined authorization and a used code store nothing."""

from __future__ import annotations

import json
import time
import urllib.parse

import httpx
import pytest
from click.testing import CliRunner
from dagster import DagsterRunStatus

from integrations_dagster import IntegrationsError, execute_sync
from integrations_dagster.cli import cli
from integrations_dagster.operations import complete_authorization, start_authorization
from integrations_dagster.security.secrets import CredentialCipher, generate_key
from integrations_dagster.store.credentials import read_credentials
from integrations_dagster.testing.fake_oauth import FakeOAuthAPI
from providers.github.fake_api import FakeGitHub
from providers.github.tables import github_issues
from tests.test_github import count, ref

TOKEN = "gho_oauthFlowTOKEN77"
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(autouse=True)
def _key(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_SECRET_KEY", generate_key())
    monkeypatch.delenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", raising=False)


@pytest.fixture
def github():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=25, token=TOKEN, login="mona") as server:
        yield server


@pytest.fixture
def oauth():  # type: ignore[no-untyped-def]
    with FakeOAuthAPI() as server:
        server.code_access_token = TOKEN  # the token the fake GitHub accepts
        server.client_secret = "cs-42"
        yield server


def engine(db_url: str):  # type: ignore[no-untyped-def]
    from integrations_dagster.orchestration.code_location import engine_of
    from tests.support import gh_app

    return engine_of(gh_app.make_defs(db_url))


def approve(url: str) -> dict[str, str]:
    """The account owner's browser: open the URL, get redirected back; the callback's query."""
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def test_authorization_url_then_callback_become_a_running_integration(store, db_url, github, oauth, dagster_instance):  # type: ignore[no-untyped-def]
    eng = engine(db_url)
    start = start_authorization(
        eng, provider_key="github", client_id="Iv1.client", redirect_uri=REDIRECT,
        metadata={"owner": github.owner, "repo": github.repo, "base_url": github.url, "since": "2000-01-01T00:00:00Z"},
        cron="*/15 * * * *", tenant="acme", authorization_url=oauth.authorize_url, token_url=oauth.token_url,
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start.url).query))
    assert start.url.startswith(oauth.authorize_url + "?")
    assert query["response_type"] == "code" and query["client_id"] == "Iv1.client"
    assert query["redirect_uri"] == REDIRECT and query["scope"] == "repo"  # the GitHub provider's declaration
    assert query["state"] == start.state and query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert github.owner not in start.url and "Iv1.client" not in start.state  # the state is sealed, not readable

    callback = approve(start.url)
    assert callback["state"] == start.state
    integ = complete_authorization(store, engine=eng, code=callback["code"], state=callback["state"], client_secret="cs-42")
    grant = oauth.code_grants[-1]
    assert grant["grant_type"] == "authorization_code" and grant["redirect_uri"] == REDIRECT
    assert grant["client_id"] == "Iv1.client" and grant["client_secret"] == "cs-42" and grant["code_verifier"]

    assert integ.name == f"mona: {github.owner}/{github.repo}" and integ.tenant == "acme"
    assert integ.sync_cron == "*/15 * * * *" and integ.metadata["login"] == "mona"
    assert "client_id" not in integ.metadata and "token_url" not in integ.metadata
    creds = store.get_integration(integ.id, tenant="acme").credentials
    assert creds["access_token"] == TOKEN and creds["refresh_token"].startswith("rt-")  # refreshable
    assert creds["token_url"] == oauth.token_url and creds["client_id"] == "Iv1.client" and creds["client_secret"] == "cs-42"
    with store.engine.connect() as conn:
        raw = read_credentials(conn, integ.id) or ""
    assert raw.startswith("fernet:") and TOKEN not in raw
    assert execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    assert count(store, github_issues, integ.id) == 25


def test_a_long_lived_token_answer_and_a_public_client(store, db_url, github, oauth):  # type: ignore[no-untyped-def]
    oauth.code_refresh = False  # GitHub OAuth apps: no refresh token, no expiry
    oauth.client_secret = None
    eng = engine(db_url)
    start = start_authorization(eng, provider_key="github_activity", client_id="c-pub", redirect_uri=REDIRECT,
                                metadata={"base_url": github.url}, interval_minutes=30,
                                authorization_url=oauth.authorize_url, token_url=oauth.token_url)
    assert "scope=user%2Cpublic_repo%2Crepo%2Cnotifications%2Cread%3Aorg" in start.url  # the seed's scopes
    cb = approve(start.url)
    integ = complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"])
    assert "client_secret" not in oauth.code_grants[-1]
    assert store.get_integration(integ.id).credentials == {"token": TOKEN}
    assert integ.sync_interval_minutes == 30 and integ.metadata["username"] == "mona"


def test_forged_stale_declined_or_reused_store_nothing(store, db_url, github, oauth):  # type: ignore[no-untyped-def]
    eng = engine(db_url)

    def begin(**kw):  # type: ignore[no-untyped-def]
        return start_authorization(eng, provider_key="github", client_id="Iv1.client", redirect_uri=REDIRECT,
                                   metadata={"owner": "a", "repo": "b", "base_url": github.url},
                                   authorization_url=oauth.authorize_url, token_url=oauth.token_url, **kw)

    cb = approve(begin().url)
    forged = cb["state"][:-6] + ("AAAAAA" if not cb["state"].endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(IntegrationsError, match="does not come from an authorization this deployment started"):
        complete_authorization(store, engine=eng, code=cb["code"], state=forged, client_secret="cs-42")
    other_key = CredentialCipher(keys=generate_key())
    with pytest.raises(IntegrationsError, match="does not come from an authorization"):
        complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], cipher=other_key)
    with pytest.raises(IntegrationsError, match="started for provider 'github', not 'github_activity'"):
        complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], provider_key="github_activity")
    complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], client_secret="cs-42")
    with pytest.raises(IntegrationsError, match="refused the authorization code \\(invalid_grant"):  # a code works once
        complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], client_secret="cs-42")
    cb2 = approve(begin().url)
    with pytest.raises(IntegrationsError, match="invalid_client"):
        complete_authorization(store, engine=eng, code=cb2["code"], state=cb2["state"], client_secret="wrong")
    oauth.deny = True
    denied = approve(begin().url)
    with pytest.raises(IntegrationsError, match="did not authorize github \\(access_denied\\); nothing was stored"):
        complete_authorization(store, engine=eng, state=denied["state"], error=denied["error"])
    assert len(store.list_integrations()) == 1

    stale = CredentialCipher()
    sealed = stale.seal({"p": "github"}, purpose="t")
    time.sleep(2.2)
    with pytest.raises(IntegrationsError, match="started more than 1 s ago"):
        stale.unseal(sealed, max_age=1, purpose="t")
    with pytest.raises(IntegrationsError, match="declares no OAuth2"):
        from integrations_dagster.operations.connect import _declaration

        _declaration(object(), "x", None, None)
    with pytest.raises(IntegrationsError, match="client id"):
        start_authorization(eng, provider_key="github", client_id="", redirect_uri=REDIRECT)


def test_cli_two_steps(store, db_url, github, oauth, monkeypatch):  # type: ignore[no-untyped-def]
    env = {"INTEGRATIONS_DATABASE_URL": db_url, "INTEGRATIONS_DEFINITIONS": "tests.support.gh_app:make_defs_default",
           "INTEGRATIONS_OAUTH_CLIENT_SECRET": "cs-42"}
    step1 = CliRunner().invoke(cli, [
        "connect", "github", "--authorize-url", "--client-id", "Iv1.cli", "--redirect-uri", REDIRECT,
        "--authorization-endpoint", oauth.authorize_url, "--token-endpoint", oauth.token_url,
        "--meta", f"owner={github.owner}", "--meta", f"repo={github.repo}", "--meta", f"base_url={github.url}",
        "--interval", "20", "--tenant", "t9"], env=env, catch_exceptions=False)
    assert step1.exit_code == 0, step1.output
    url = step1.stdout.strip().splitlines()[0]
    assert url.startswith(oauth.authorize_url + "?") and "client_id=Iv1.cli" in url
    callback = approve(url)
    redirected = REDIRECT + "?" + urllib.parse.urlencode(callback)
    step2 = CliRunner().invoke(cli, ["connect", "github", "--redirected-to", redirected, "--json"], env=env,
                               catch_exceptions=False)
    assert step2.exit_code == 0, step2.output
    shown = json.loads(step2.output)
    assert shown["name"] == f"mona: {github.owner}/{github.repo}" and shown["tenant"] == "t9"
    assert TOKEN not in step2.output and "cs-42" not in step2.output
    again = CliRunner().invoke(cli, ["connect", "github", "--code", callback["code"], "--state", callback["state"]], env=env)
    assert again.exit_code == 1 and "invalid_grant" in again.output
    both = CliRunner().invoke(cli, ["connect", "github", "--authorize-url", "--code", "x"], env=env)
    assert both.exit_code == 2 and "give one of" in both.output


# --- a declarative provider with auth kind oauth2 -------------------------------------------------
OAUTH_YAML = """
key: items_api
base_url: https://api.example.test
auth:
  kind: oauth2
  authorization_url: https://auth.example.test/authorize
  token_url: https://auth.example.test/token
  scopes: [items.read, offline]
resources:
  - name: items
    path: /items
    items_path: items
    external_id: id
    destination:
      table: rest_oauth_items
      primary_key: [id]
      columns:
        id: {path: id, type: integer}
        updated_at: updated_at
"""


def make_rest_defs(database_url: str, yaml_path: str):  # type: ignore[no-untyped-def]
    from integrations_dagster import SyncSettings, build_definitions
    from integrations_dagster.declarative import RestProvider

    api = RestProvider.from_yaml(yaml_path)
    return build_definitions(providers=[api], listeners=[api.listener], sensors=False, operator_jobs=False,
                             settings=SyncSettings(database_url=database_url, item_backoff=[0.0], item_tries=2))


def test_a_declarative_oauth2_provider_connects_and_syncs(store, db_url, oauth, tmp_path, dagster_instance):  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from integrations_dagster import DefinitionsRef
    from integrations_dagster.declarative import migrate_destinations
    from integrations_dagster.orchestration.code_location import engine_of

    oauth.code_access_token = None
    path = tmp_path / "items.yaml"
    path.write_text(OAUTH_YAML)
    rest_ref = DefinitionsRef("tests.test_connect_oauth", "make_rest_defs", {"database_url": db_url, "yaml_path": str(path)})
    eng = engine_of(make_rest_defs(db_url, str(path)))
    start = start_authorization(eng, provider_key="items_api", client_id="c-9", redirect_uri=REDIRECT,
                                metadata={"base_url": oauth.url}, authorization_url=oauth.authorize_url,
                                token_url=oauth.token_url)
    assert "scope=items.read+offline" in start.url  # the YAML's scopes, space-separated
    cb = approve(start.url)
    integ = complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], client_secret="cs-42")
    assert integ.name == "items_api account"
    creds = store.get_integration(integ.id).credentials
    assert creds["refresh_token"] and creds["token_url"] == oauth.token_url and creds["client_secret"] == "cs-42"
    (plan,) = migrate_destinations(store, eng.provider("items_api"))
    assert plan.next_revision == 1
    oauth.expire_access_tokens()  # the API says 401: refreshed once with the stored refresh token
    assert execute_sync(rest_ref, "items_api", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    assert oauth.refreshes == 1
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rest_oauth_items")).scalar() == oauth.items


def test_a_declarative_oauth2_provider_names_the_integration_after_its_identity(store, db_url, github, oauth, tmp_path):  # type: ignore[no-untyped-def]
    from integrations_dagster.orchestration.code_location import engine_of

    path = tmp_path / "who.yaml"
    path.write_text(OAUTH_YAML.replace("key: items_api", "key: who_api").replace(
        "  scopes: [items.read, offline]\n", "  scopes: [items.read, offline]\n  identity: {path: /user, field: login}\n"))
    eng = engine_of(make_rest_defs(db_url, str(path)))
    start = start_authorization(eng, provider_key="who_api", client_id="c-9", redirect_uri=REDIRECT,
                                metadata={"base_url": github.url}, authorization_url=oauth.authorize_url,
                                token_url=oauth.token_url)
    cb = approve(start.url)
    integ = complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], client_secret="cs-42")
    assert integ.name == "mona" and integ.metadata["account"] == "mona"  # GET /user with the new token
    oauth.code_access_token = "not-the-fake-githubs-token"
    cb = approve(start_authorization(eng, provider_key="who_api", client_id="c-9", redirect_uri=REDIRECT,
                                     metadata={"base_url": github.url}, authorization_url=oauth.authorize_url,
                                     token_url=oauth.token_url).url)
    with pytest.raises(IntegrationsError, match="the API refused the new token .*nothing was stored"):
        complete_authorization(store, engine=eng, code=cb["code"], state=cb["state"], client_secret="cs-42")
    assert len(store.list_integrations()) == 1
