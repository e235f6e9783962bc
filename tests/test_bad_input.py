"""Bad input gets a clear error, loses nothing and wedges nothing: the bad-input corpus (issue 9).

The cases are data files under ``tests/data/bad_input/`` (one file per kind, a ``_about`` key in each
says what the test does with it), driven by the parametrized tests below, on SQLite and PostgreSQL:

- ``settings.json``: wrong ``SyncSettings`` in code and from the environment (the field is named);
- ``integration_config.json``: wrong metadata and credentials at ``add``, CLI and Python API (the fields
  are named, nothing is stored, no credential is echoed);
- ``dispatch_items.json``: values no database stores as given (over-long external id, NUL, lone
  surrogate, NaN/Infinity) become recorded invalid items and the run goes on;
- ``api_pages.json``: malformed pages and items, refused tokens, unknown repositories and circular
  next links from a real local HTTP API (``tests/support/scripted_api.py``) to the bundled GitHub
  provider: a clear error, nothing delivered is lost, the cursor holds, and once the API is fixed the
  next run delivers everything;
- ``unknown_ids.json``: operator actions on ids that do not exist (the id is named, nothing changes).

Plus the one-off cases below them (refused providers and listeners, non-JSON checkpoints, redaction).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus
from pydantic import ValidationError

from integrations_dagster import (
    DefinitionsRef,
    Integration,
    Provider,
    RateLimit,
    SyncItemEvent,
    SyncSettings,
    build_definitions,
    execute_sync,
    listener,
)
from integrations_dagster.errors import IntegrationsError
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.authoring.session import SyncSession
from providers.synthetic import SyntheticItem, SyntheticProvider


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_ITEM_TRIES", "2")
    monkeypatch.setenv("INTEGRATIONS_ITEM_BACKOFF", "[1, 2]")
    s = SyncSettings()
    assert (s.item_tries, s.item_backoff, s.backoff_for(1), s.backoff_for(9)) == (2, [1, 2], 1.0, 2.0)


def test_rate_limit_rejects_nonsense():
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.per_minute(0)
    assert RateLimit.per_hour(5000) == RateLimit(5000, 3600.0)


def test_two_providers_with_one_key_are_refused():
    with pytest.raises(IntegrationsError, match="two providers share the key 'synthetic'"):
        build_definitions(providers=[SyntheticProvider(), SyntheticProvider()], listeners=[], sensors=False)


def test_listener_that_is_not_one_is_refused():
    with pytest.raises(TypeError, match="is not a listener"):
        ListenerRegistry.build([print])


def test_dispatch_rejects_non_events_and_non_json_checkpoints(store):
    from datetime import datetime

    integ = store.create_integration(provider_key="synthetic", name="s")
    session = SyncSession(store=store, run_id=1, integration=integ, settings=SyncSettings(), log=None)
    with pytest.raises(TypeError, match="takes a SyncItemEvent, got dict"):
        session.dispatch({"x": 1}, checkpoint_value="a")  # type: ignore[arg-type]
    event = SyntheticItem(integration_id=1, index=0, external_id="e", value="v")
    with pytest.raises(TypeError, match="pass datetimes as ISO-8601 strings"):
        session.dispatch(event, checkpoint_value=datetime.now())
    assert session.dispatched == 0


def test_github_integration_without_owner_fails_clearly_and_keeps_cursor(store, db_url, dagster_instance, monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    integ = store.create_integration(provider_key="github", name="g", metadata={"base_url": "http://127.0.0.1:9"},
                                     credentials={"token": "t0ken-value"})
    ref = DefinitionsRef("tests.support.gh_app", "make_defs", {"database_url": db_url})
    run = execute_sync(ref, "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = store.runs_for_integration(integ.id)[0]
    assert sr["status"] == "failed" and "metadata is missing owner, repo" in sr["error"]
    assert store.get_integration(integ.id).cursor is None


def test_credentials_never_in_repr_or_dump():
    integ = Integration(id=1, provider_key="github", name="n", credentials={"token": "very-secret-value"})
    assert "very-secret-value" not in repr(integ) + str(integ) + integ.model_dump_json()


# --- the corpus --------------------------------------------------------------------------------------
CORPUS = Path(__file__).parent / "data" / "bad_input"


def _expand(value: Any) -> Any:
    if isinstance(value, dict):
        if "$repeat" in value:
            return value["$repeat"] * value["$times"]
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def corpus(name: str) -> dict[str, Any]:
    """The cases of one corpus file (``json`` reads NaN, Infinity, NUL and lone surrogate escapes as such)."""
    data = json.loads((CORPUS / name).read_text(encoding="utf-8"))
    return {k: _expand(v) for k, v in data.items() if not k.startswith("_")}


SETTINGS = corpus("settings.json")
CONFIGS = corpus("integration_config.json")
DISPATCH = corpus("dispatch_items.json")
PAGES = corpus("api_pages.json")
UNKNOWN = corpus("unknown_ids.json")


def test_every_corpus_file_is_driven():
    assert sorted(p.name for p in CORPUS.glob("*.json")) == sorted(
        ["settings.json", "integration_config.json", "dispatch_items.json", "api_pages.json", "unknown_ids.json"])


# settings ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_wrong_settings_name_the_field(case, monkeypatch):
    spec = SETTINGS[case]
    for k, v in spec.get("env", {}).items():
        monkeypatch.setenv(k, v)
    from pydantic_settings import SettingsError

    with pytest.raises((ValidationError, SettingsError)) as info:
        SyncSettings(**spec.get("kwargs", {}))
    if isinstance(info.value, ValidationError):
        assert [e["loc"][0] for e in info.value.errors()] == [spec["field"]], info.value
    else:  # a value from the environment that is not JSON where JSON is expected
        assert f'error parsing value for field "{spec["field"]}"' in str(info.value)


# metadata and credentials at `add` --------------------------------------------------------------------
def _pairs(values: list[str], *, parse_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in values:
        key, _, value = raw.partition("=")
        try:
            out[key] = json.loads(value) if parse_json else value
        except ValueError:
            out[key] = value
    return out


def _app_engine():  # type: ignore[no-untyped-def]
    from integrations_dagster.orchestration.code_location import load_engine

    return load_engine("integrations_app.definitions", "defs")


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_wrong_metadata_or_credentials_are_refused_at_add_naming_the_fields(case, store, monkeypatch):
    from integrations_dagster import InvalidIntegrationConfig, add_integration  # the public Python API

    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    spec = CONFIGS[case]
    secrets = [v.partition("=")[2] for v in spec["secret"]]
    with pytest.raises(InvalidIntegrationConfig) as info:
        add_integration(store, engine=_app_engine(), provider_key=spec["provider"], name="x",
                            metadata=_pairs(spec["meta"], parse_json=True),
                            credentials=_pairs(spec["secret"], parse_json=False))
    message = str(info.value)
    assert sorted(info.value.fields) == sorted(spec["fields"]), message
    for text in spec["says"]:
        assert text in message, message
    assert not any(s.strip() and s in message for s in secrets), message
    assert store.list_integrations(decrypt=False) == []


@pytest.mark.parametrize("case", ["github_without_repo_or_token", "github_misspelt_key", "synthetic_negative_items"])
def test_the_cli_add_refuses_them_with_exit_1_and_stores_nothing(case, db_url, tmp_path):
    from click.testing import CliRunner

    from integrations_dagster.cli import cli
    from integrations_dagster.security.secrets import generate_key

    spec = CONFIGS[case]
    env = {"INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(tmp_path),
           "INTEGRATIONS_DEFINITIONS": "integrations_app.definitions:defs", "INTEGRATIONS_SECRET_KEY": generate_key(),
           "INTEGRATIONS_TENANT": ""}
    args = ["add", spec["provider"], "--name", "x"]
    for m in spec["meta"]:
        args += ["--meta", m]
    for v in spec["secret"]:
        args += ["--secret", v]
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {spec['provider']} integration 'x': ") and "Traceback" not in result.output
    for text in spec["says"]:
        assert text in result.stderr
    assert not any(v.partition("=")[2] in result.output for v in spec["secret"])
    listed = CliRunner().invoke(cli, ["list", "--json"], env=env, catch_exceptions=False)
    assert json.loads(listed.stdout) == []


def test_the_issues_example_names_repo_and_the_token(db_url, tmp_path):
    """`integrations add github --name x --meta owner=a` used to succeed and fail only at the first sync."""
    from click.testing import CliRunner

    from integrations_dagster.cli import cli

    env = {"INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(tmp_path),
           "INTEGRATIONS_DEFINITIONS": "integrations_app.definitions:defs", "INTEGRATIONS_TENANT": ""}
    result = CliRunner().invoke(cli, ["add", "github", "--name", "x", "--meta", "owner=a"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: github integration 'x': metadata is missing repo; credentials is missing token "
        "(github takes metadata: owner (required), repo (required), login, base_url, since, per_page; credentials: token (required))")


def test_a_valid_config_is_stored_as_given_and_typed_on_read(store, monkeypatch):
    from integrations_dagster.operations import actions as ops
    from providers.github.common import GitHubIssuesMetadata

    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    engine = _app_engine()
    meta = {"owner": "acme", "repo": 123, "base_url": "http://127.0.0.1:9", "since": "2024-01-01T00:00:00+02:00"}
    integ = ops.add_integration(store, engine=engine, provider_key="github", name="gh", metadata=meta,
                                credentials={"token": "ghp_ok"})
    stored = store.get_integration(integ.id)
    assert stored.metadata == meta and stored.credentials == {"token": "ghp_ok"}
    typed = engine.provider("github").metadata_of(stored)
    assert isinstance(typed, GitHubIssuesMetadata) and (typed.owner, typed.repo) == ("acme", "123")
    # a provider without models (here: none declared) accepts anything, as before
    assert Provider.metadata_model is None and Provider.credentials_model is None


# items no database can store as given -------------------------------------------------------------------
class CorpusItem(SyncItemEvent):
    n: int
    text: str = ""


FEED: list[tuple[Any, Any, str]] = []
SEEN: list[int] = []


@listener(CorpusItem)
def _record_item(event: CorpusItem) -> None:
    SEEN.append(event.n)


class CorpusFeed(Provider):
    key = "corpus_feed"

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for i, (cp, ext, text) in enumerate(FEED):
            session.dispatch(CorpusItem(n=i, text=text), checkpoint_value=cp, external_id=ext)


def _engine(*providers: Provider, listeners: list[Any]) -> Any:
    from integrations_dagster.engine.engine import SyncEngine

    return SyncEngine(providers=list(providers), listeners=ListenerRegistry.build(listeners),
                      settings=SyncSettings(item_backoff=[0], item_tries=1))


def _sync(engine: Any, store: Any, integration_id: int) -> dict[str, Any]:
    """One sync through the engine's steps, as the job runs them; returns the settled run's row."""
    start = engine.start_run(store, integration_id, dagster_run_id=None)
    assert not start.skipped, start.skipped_reason  # nothing wedged: the last run does not block this one
    from integrations_dagster.authoring.context import http_factory_for

    integration = store.get_integration(integration_id)
    factory = None
    if integration.provider_key in engine.providers:
        factory = http_factory_for(engine, store, engine.provider(integration.provider_key), integration, start.run_id)
    try:
        res = engine.enumerate(store, integration, start.run_id, http_factory=factory)
    except Exception:
        pass  # the engine failed the run; the row says why
    else:
        for chunk in range(res.chunks):
            engine.process_chunk(store, start.run_id, chunk)
        engine.reconcile(store, start.run_id)
    return store.runs_for_integration(integration_id, limit=1)[0]


@pytest.mark.parametrize("case", sorted(DISPATCH))
def test_a_bad_item_is_recorded_invalid_and_the_run_proceeds(store, case):
    from integrations_dagster.operations.actions import skip_item

    spec = DISPATCH[case]
    engine = _engine(CorpusFeed(), listeners=[_record_item])
    integ = store.create_integration(provider_key="corpus_feed", name="f")
    SEEN.clear()
    FEED[:] = [("00000000", "good-0", "ok"), (spec["checkpoint"], spec["external_id"], spec["text"]),
               ("00000002", "good-2", "ok")]
    run = _sync(engine, store, integ.id)  # the enumeration used to abort (PostgreSQL) or store junk (SQLite)
    assert (run["status"], run["items_total"], run["success_count"], run["failed_count"]) == ("partial", 3, 2, 1)
    assert sorted(SEEN) == [0, 2]
    [bad] = store.failed_items(integration_id=integ.id)
    assert "invalid item: " in bad["last_error"] and spec["error"] in bad["last_error"], bad["last_error"]
    assert bad["external_id"] is None or len(bad["external_id"]) <= 300 and "\x00" not in bad["external_id"]
    payload = bad["payload"] if isinstance(bad["payload"], dict) else json.loads(bad["payload"])
    assert "CorpusItem" in payload["raw"]["event_type"] and "'n': 1" in payload["raw"]["repr"]
    cursor = store.get_integration(integ.id).cursor  # it holds the cursor like any failure
    assert cursor is None or cursor < "00000001"
    out = skip_item(store, engine, bad["id"])
    assert (out.run_status, out.cursor_after) == ("success", "00000002")
    FEED.clear()


# malformed API pages and items ---------------------------------------------------------------------------
TOKEN = "ghp_CORPUS_token_never_shown_123"
DELIVERED: list[int] = []


def _record_issue(event: Any) -> None:
    DELIVERED.append(event.issue["number"])


PROVIDER_PAGES = sorted(k for k, v in PAGES.items() if v.get("paginator") != "link")
LINK_PAGES = sorted(k for k, v in PAGES.items() if v.get("paginator") == "link")


@pytest.mark.parametrize("case", LINK_PAGES)
def test_next_links_that_go_round_fail_the_listing_instead_of_looping(case):
    from integrations_dagster.http import ApiClient, LinkHeaderPaginator
    from integrations_dagster.http.errors import PaginationError
    from tests.support.scripted_api import ScriptedApi

    spec = PAGES[case]
    with ScriptedApi(spec["pages"]) as api, ApiClient(base_url=api.url, sleep=lambda s: None) as client:
        seen = []
        with pytest.raises(PaginationError) as info:
            for raw, _, _ in client.iter_items(api.path, paginator=LinkHeaderPaginator()):
                seen.append(raw["number"])
        assert len(api.requests) == len(spec["pages"])  # the circle is noticed before a page is fetched again
    for text in spec["error"]:
        assert text in str(info.value)
    assert seen == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("case", PROVIDER_PAGES)
def test_a_malformed_api_page_or_item_fails_clearly_and_the_fixed_api_delivers_everything(case, store, monkeypatch):
    from providers.github import GitHubProvider
    from providers.github.issues import GitHubIssueSynced
    from tests.support.scripted_api import SINCE, ScriptedApi, good_pages, updated_at

    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    spec = PAGES[case]
    engine = _engine(GitHubProvider(), listeners=[(GitHubIssueSynced, _record_issue)])
    engine.http_options = {"sleep": lambda s: None, "prefetch_pages": 1}
    DELIVERED.clear()
    with ScriptedApi(spec["pages"]) as api:
        integ = store.create_integration(
            provider_key="github", name=case, credentials={"token": TOKEN},
            metadata={"owner": "acme", "repo": "widgets", "base_url": api.url, "since": SINCE, "per_page": 3})
        run = _sync(engine, store, integ.id)
        assert run["status"] == spec["run"], (run["error"], run)
        for text in spec.get("error", []):
            assert text in (run["error"] or ""), run["error"]
        assert TOKEN not in repr(run)
        assert sorted(DELIVERED) == spec["delivered"]
        failed = store.failed_items(integration_id=integ.id)
        assert len(failed) == spec.get("failed", 0), [f["last_error"] for f in failed]
        errors = " | ".join(f["last_error"] for f in failed)
        for text in spec.get("item_errors", []):
            assert text in errors, errors
        after = store.get_integration(integ.id)
        assert after.cursor == (None if spec["cursor"] is None else updated_at(spec["cursor"]))
        if spec.get("auth_failure"):
            assert after.consecutive_auth_failures == 1

        # the API is fixed: the next run is not blocked and everything arrives
        api.pages = spec.get("fixed") or good_pages(list(range(1, 10)))
        again = _sync(engine, store, integ.id)
        assert again["status"] == "success", again
        assert set(DELIVERED) == set(range(1, 10))
        after = store.get_integration(integ.id)
        assert after.cursor == updated_at(9) and after.consecutive_auth_failures == 0
        # what failed before may still be listed (the operator skips it, or a later version supersedes
        # it); nothing new failed, and an item without an id stays visible
        still = {f["id"] for f in store.failed_items(integration_id=integ.id)}
        assert still <= {f["id"] for f in failed}
        assert {f["id"] for f in failed if f["external_id"] is None} <= still


# unknown ids ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(UNKNOWN))
def test_an_unknown_id_is_named_and_changes_nothing(case, store):
    from integrations_dagster.operations import actions as ops

    spec = UNKNOWN[case]
    engine = _engine(CorpusFeed(), listeners=[_record_item])
    integ = store.create_integration(provider_key="corpus_feed", name="f")
    FEED[:] = [("00000000", "a", "ok"), ("00000001", "b", "a\x00b"), ("00000002", "c", "ok")]
    _sync(engine, store, integ.id)
    before = (store.get_integration(integ.id).model_dump(), store.failed_items(integration_id=integ.id))
    fn = getattr(ops, spec["call"])
    with pytest.raises(IntegrationsError) as info:
        fn(store, engine, spec["id"]) if spec["engine"] else fn(store, spec["id"])
    assert str(info.value) == spec["error"]
    assert (store.get_integration(integ.id).model_dump(), store.failed_items(integration_id=integ.id)) == before
    FEED.clear()


def test_an_integration_whose_provider_left_the_code_fails_its_run_and_blocks_nothing(store):
    engine = _engine(CorpusFeed(), listeners=[_record_item])
    integ = store.create_integration(provider_key="gone", name="g")
    for _ in range(2):  # the second start is not skipped: the first run did not stay "enumerating"
        run = _sync(engine, store, integ.id)
        assert run["status"] == "failed" and "unknown provider 'gone'" in run["error"], run
