"""Declarative REST providers: config validation naming fields, GitHub issues as configuration
storing exactly the coded provider's rows, a second API style (API key, has_more, nested items,
epoch checkpoints with an overlap window), GitHub App auth from config; both databases."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from dagster import DagsterRunStatus
from sqlalchemy import inspect, select

from integrations_dagster import DefinitionsRef, execute_sync
from integrations_dagster.declarative import RestConfigError, RestProvider, load_config, migrate_destinations, parse_config
from integrations_dagster.declarative.provider import with_overlap
from providers.contacts import CONTACTS_YAML, contacts_provider
from providers.contacts.fake_api import FakeContacts
from providers.github.fake_api import FakeGitHub
from providers.github.rest import ISSUES_YAML, github_issues_rest
from providers.github.tables import github_issues

TOKEN = "ghp_declarativeTOKEN123"


@pytest.fixture(autouse=True)
def _plaintext(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")


@pytest.fixture
def migrated(store):  # type: ignore[no-untyped-def]
    """The declarative providers' destination tables, created by their migrations."""
    from tests.support.rest_app import rest_providers

    for provider in rest_providers():
        migrate_destinations(store, provider)
    return store


def ref(db_url: str) -> DefinitionsRef:
    return DefinitionsRef("tests.support.rest_app", "make_defs", {"database_url": db_url})


def rows(store, table, integration_id: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        out = conn.execute(select(table).where(table.c.integration_id == integration_id)).mappings().all()
    return sorted(({k: v for k, v in r.items() if k != "integration_id"} for r in out),
                  key=lambda r: str(r.get("issue_id") or r.get("contact_id")))


def test_github_issues_as_configuration_store_exactly_the_coded_providers_rows(migrated, store, db_url, dagster_instance):  # type: ignore[no-untyped-def]
    rest_table = github_issues_rest().tables()["issues"]
    with FakeGitHub(issues=420, token=TOKEN) as fake:
        meta = {"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"}
        coded = store.create_integration(provider_key="github", name="coded", metadata=meta, credentials={"token": TOKEN})
        conf = store.create_integration(provider_key="github_issues_rest", name="conf", metadata=meta,
                                        credentials={"token": TOKEN})
        for integ in (coded, conf):
            assert execute_sync(ref(db_url), integ.provider_key, integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
        fake.bump(30)
        for integ in (coded, conf):
            assert execute_sync(ref(db_url), integ.provider_key, integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    a, b = rows(store, github_issues, coded.id), rows(store, rest_table, conf.id)
    assert len(a) == 420 and a == b
    assert store.get_integration(conf.id).cursor == store.get_integration(coded.id).cursor
    cols = {c["name"] for c in inspect(store.engine).get_columns("rest_github_issues")}
    assert cols == {c.name for c in github_issues.columns}


def test_github_issues_config_runs_with_an_app_installation(migrated, store, db_url, dagster_instance, monkeypatch):  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=120, token="unused") as fake:
        key = fake.enable_app(app_id=11, installation_id=22)
        integ = store.create_integration(
            provider_key="github_issues_rest", name="app",
            metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"},
            credentials={"app_id": 11, "installation_id": 22, "private_key": key},
        )
        assert execute_sync(ref(db_url), "github_issues_rest", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    assert len(rows(store, github_issues_rest().tables()["issues"], integ.id)) == 120


def test_contacts_api_key_has_more_nested_items_and_overlap_window(migrated, store, db_url, dagster_instance):  # type: ignore[no-untyped-def]
    table = contacts_provider().tables()["contacts"]
    with FakeContacts(contacts=130, api_key="k-1") as fake:
        integ = store.create_integration(provider_key="contacts", name="crm", metadata={"base_url": fake.url},
                                         credentials={"api_key": "k-1"})
        assert execute_sync(ref(db_url), "contacts", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
        got = rows(store, table, integ.id)
        assert len(got) == 130
        first = next(r for r in got if r["contact_id"] == "c-00005")
        assert first == {"contact_id": "c-00005", "email": "person5@example.test", "first_name": "First5",
                         "last_name": "Last5", "tags": ["vip", "t2"], "vip": True, "modified": fake.contacts["c-00005"]["modified"]}
        cursor = store.get_integration(integ.id).cursor
        assert cursor == max(c["modified"] for c in fake.contacts.values())
        fake.requests.clear()
        fake.touch(4)
        assert execute_sync(ref(db_url), "contacts", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
        assert f"modified_after={cursor - 300}" in fake.requests[0]  # the overlap window
        assert len(rows(store, table, integ.id)) == 130
        assert store.get_integration(integ.id).cursor == max(c["modified"] for c in fake.contacts.values())


def test_a_wrong_api_key_is_an_authentication_failure(migrated, store, db_url, dagster_instance):  # type: ignore[no-untyped-def]
    with FakeContacts(contacts=3, api_key="right") as fake:
        integ = store.create_integration(provider_key="contacts", name="crm", metadata={"base_url": fake.url},
                                         credentials={"api_key": "wrong"})
        assert execute_sync(ref(db_url), "contacts", integ.id, instance=dagster_instance).status == DagsterRunStatus.FAILURE
    run = store.runs_for_integration(integ.id, limit=1)[0]
    assert run["auth_failure"] is True and "401" in run["error"]


def test_config_errors_name_the_field_and_the_problem(tmp_path):  # type: ignore[no-untyped-def]
    data = yaml.safe_load(CONTACTS_YAML.read_text())
    res = data["resources"][0]
    res["paginator"]["kind"] = "pages"
    res["destination"]["primary_key"] = ["id"]
    res["destination"]["columns"]["tags"]["type"] = "text"
    data["auth"] = {"kind": "api_key", "credential": "api_key"}
    data["resources"][0]["incremental"]["overlap_seconds"] = -5
    data["unknown_option"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(RestConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert str(bad) in text
    assert "resources.0.paginator: Input tag 'pages'" in text
    assert "auth.api_key: set exactly one of 'header' or 'query'" in text
    assert "resources.0.incremental.overlap_seconds: Input should be greater than or equal to 0" in text
    assert "unknown_option: Extra inputs are not permitted" in text
    clean = yaml.safe_load(CONTACTS_YAML.read_text())
    clean["resources"][0]["destination"]["primary_key"] = ["nope"]
    with pytest.raises(RestConfigError, match=r"resources\.0\.destination: primary_key names undeclared column\(s\): nope"):
        parse_config(clean)
    with pytest.raises(RestConfigError, match="not valid YAML"):
        (tmp_path / "x.yaml").write_text("key: [unclosed")
        load_config(tmp_path / "x.yaml")
    good = load_config(ISSUES_YAML)
    assert isinstance(RestProvider(good), RestProvider)


def test_missing_metadata_for_a_path_placeholder_is_named(migrated, store, db_url, dagster_instance):  # type: ignore[no-untyped-def]
    integ = store.create_integration(provider_key="github_issues_rest", name="x", metadata={"owner": "a",
                                     "base_url": "http://127.0.0.1:9"}, credentials={"token": TOKEN})
    assert execute_sync(ref(db_url), "github_issues_rest", integ.id, instance=dagster_instance).status == DagsterRunStatus.FAILURE
    assert "path needs metadata['repo']" in store.runs_for_integration(integ.id, limit=1)[0]["error"]


def test_overlap_window_is_pure():  # type: ignore[no-untyped-def]
    assert with_overlap("2026-01-01T00:05:00Z", 300) == "2026-01-01T00:00:00Z"
    assert with_overlap("2026-01-01T00:05:00+00:00", 60) == "2026-01-01T00:04:00+00:00"
    assert with_overlap(1000, 300) == 700
    assert with_overlap("opaque", 300) == "opaque" and with_overlap("x", 0) == "x"
