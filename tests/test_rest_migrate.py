"""Declarative destination tables are created and changed by recorded, versioned migrations
(``integrations rest migrate``): idempotent, refused changes say what to do, a sync never changes a
table and refuses one whose configuration changed since; both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from dagster import DagsterRunStatus
from sqlalchemy import inspect, select, text

from integrations_dagster import DefinitionsRef, IntegrationsError, SyncSettings, build_definitions, execute_sync
from integrations_dagster.cli import cli
from integrations_dagster.declarative import RestProvider, migrate_destinations, parse_config, plan_destinations
from integrations_dagster.declarative.schema import (
    AddColumn,
    CreateTable,
    KeepColumn,
    LiveTable,
    TableSchema,
    drift,
    plan_table,
    schema_of,
)
from integrations_dagster.store import rest_tables
from providers.contacts import CONTACTS_YAML
from providers.contacts.fake_api import FakeContacts


@pytest.fixture(autouse=True)
def _plaintext(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")


def contacts_yaml(tmp_path: Path, change: Any = None, name: str = "my_api.yaml") -> Path:
    """The contacts example under a key and table of this test's own, changed by ``change(data)``."""
    data = yaml.safe_load(CONTACTS_YAML.read_text())
    data["key"] = "crm"
    data["resources"][0]["destination"]["table"] = "crm_people"
    if change:
        change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def columns(data: dict[str, Any]) -> dict[str, Any]:
    return data["resources"][0]["destination"]["columns"]  # type: ignore[no-any-return]


def versions(store) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return [(r["revision"], r["operations"]) for r in rest_tables.history(store, "crm_people")]


# A code location built from a YAML file, as docs/REST_PROVIDERS.md has the user write it.
def make_defs(database_url: str, yaml_path: str):  # type: ignore[no-untyped-def]
    crm = RestProvider.from_yaml(yaml_path)
    return build_definitions(providers=[crm], listeners=[crm.listener], sensors=False, operator_jobs=False,
                             settings=SyncSettings(database_url=database_url, item_backoff=[0.0], item_tries=2))


def sync(db_url: str, path: Path, integration_id: int, instance: Any) -> DagsterRunStatus:
    ref = DefinitionsRef("tests.test_rest_migrate", "make_defs", {"database_url": db_url, "yaml_path": str(path)})
    return execute_sync(ref, "crm", integration_id, instance=instance).status


# --- pure decisions -----------------------------------------------------------------------------
def _schema(change: Any = None) -> TableSchema:
    data = yaml.safe_load(CONTACTS_YAML.read_text())
    if change:
        change(data)
    return schema_of(parse_config(data).resources[0].destination)


def test_plans_are_pure_decisions() -> None:
    v1 = _schema()
    assert plan_table("r", v1, None, None).steps == (CreateTable(v1),)
    live = LiveTable(frozenset(v1.names), frozenset(v1.primary_key), frozenset(v1.names) - set(v1.primary_key))
    assert plan_table("r", v1, (1, v1), live).status == "up to date"
    v2 = _schema(lambda d: columns(d).update(phone="phone"))
    plan = plan_table("r", v2, (1, v1), live)
    assert plan.status == "pending" and plan.next_revision == 2
    assert [type(s) for s in plan.steps] == [AddColumn] and plan.steps[0].describe() == "add column phone text"
    gone = _schema(lambda d: columns(d).pop("vip"))
    assert plan_table("r", gone, (1, v1), live).steps == (KeepColumn("vip"),)
    retyped = _schema(lambda d: columns(d).update(email={"path": "email", "type": "bigint"}))
    refused = plan_table("r", retyped, (1, v1), live)
    assert refused.status == "refused" and refused.steps == ()
    assert "column email changes type from text to bigint" in refused.refused[0]
    assert "--accept" in refused.refused[-1]
    rekeyed = _schema(lambda d: d["resources"][0]["destination"].update(primary_key=["email"]))
    assert "primary key changes from (integration_id, contact_id) to (integration_id, email)" in \
        plan_table("r", rekeyed, (1, v1), live).refused[0]
    strict = _schema(lambda d: columns(d).update(phone={"path": "phone", "nullable": False}))
    assert "existing rows have no value" in plan_table("r", strict, (1, v1), live).refused[0]
    assert drift(v1, (1, v1)) is None
    assert drift(v1, None) == f"destination table {v1.table} has not been migrated"
    assert "phone added" in (drift(v2, (1, v1)) or "") and "(revision 1)" in (drift(v2, (1, v1)) or "")


# --- against both databases ---------------------------------------------------------------------
def test_migrate_creates_the_table_records_revision_1_and_is_idempotent(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    crm = RestProvider.from_yaml(contacts_yaml(tmp_path))
    (plan,) = plan_destinations(store, crm)
    assert plan.status == "pending" and isinstance(plan.steps[0], CreateTable)
    assert not inspect(store.engine).has_table("crm_people")  # planning changes nothing
    (done,) = migrate_destinations(store, crm)
    assert done.next_revision == 1
    cols = {c["name"]: c for c in inspect(store.engine).get_columns("crm_people")}
    assert set(cols) == {"integration_id", "contact_id", "email", "first_name", "last_name", "tags", "vip", "modified"}
    assert inspect(store.engine).get_pk_constraint("crm_people")["constrained_columns"] == ["integration_id", "contact_id"]
    (again,) = migrate_destinations(store, crm)
    assert again.status == "up to date" and again.revision == 1
    (revision, ops), = versions(store)
    assert revision == 1 and ops.startswith("create table crm_people (integration_id integer primary key")
    assert rest_tables.history(store, "crm_people")[0]["source"].endswith("my_api.yaml")


def test_a_sync_never_creates_or_changes_a_table_and_says_what_to_run(store, db_url, tmp_path, dagster_instance) -> None:  # type: ignore[no-untyped-def]
    path = contacts_yaml(tmp_path)
    with FakeContacts(contacts=20, api_key="k") as fake:
        integ = store.create_integration(provider_key="crm", name="crm", metadata={"base_url": fake.url},
                                         credentials={"api_key": "k"})
        assert sync(db_url, path, integ.id, dagster_instance) == DagsterRunStatus.FAILURE
        error = store.runs_for_integration(integ.id, limit=1)[0]["error"]
        assert "destination table crm_people has not been migrated" in error
        assert f"run `integrations rest migrate {path}`" in error and fake.requests == []  # nothing read
        assert not inspect(store.engine).has_table("crm_people")

        migrate_destinations(store, RestProvider.from_yaml(path))
        assert sync(db_url, path, integ.id, dagster_instance) == DagsterRunStatus.SUCCESS

        # The YAML gains a column (a new file: the loaded code location is cached per process, as a
        # reloaded one would be): the next sync refuses and names it; the table is unchanged.
        path = contacts_yaml(tmp_path, lambda d: columns(d).update(phone="phone"), name="my_api_v2.yaml")
        fake.touch(2)
        assert sync(db_url, path, integ.id, dagster_instance) == DagsterRunStatus.FAILURE
        error = store.runs_for_integration(integ.id, limit=1)[0]["error"]
        assert "configuration of destination table crm_people changed since its migration (revision 1): phone added" \
            in error
        assert "phone" not in {c["name"] for c in inspect(store.engine).get_columns("crm_people")}

        (plan,) = migrate_destinations(store, RestProvider.from_yaml(path))
        assert plan.next_revision == 2 and [s.describe() for s in plan.steps] == ["add column phone text"]
        assert sync(db_url, path, integ.id, dagster_instance) == DagsterRunStatus.SUCCESS
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM crm_people")).scalar() == 20
    assert [r for r, _ in versions(store)] == [1, 2]


def test_a_change_that_needs_a_decision_is_refused_and_changes_nothing(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    migrate_destinations(store, RestProvider.from_yaml(contacts_yaml(tmp_path)))
    with store.begin() as conn:
        conn.execute(text("INSERT INTO crm_people (integration_id, contact_id, email) VALUES (1, 'c-1', 'a@b.c')"))
    retyped = contacts_yaml(tmp_path, lambda d: columns(d).update(modified={"path": "modified", "type": "text"}))
    (plan,) = migrate_destinations(store, RestProvider.from_yaml(retyped))
    assert plan.status == "refused" and "column modified changes type from bigint to text" in plan.refused[0]
    assert [r for r, _ in versions(store)] == [1]
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT email FROM crm_people")).scalar() == "a@b.c"
    # The operator alters the table (here: the type change does not matter to SQLite), then accepts.
    if not store.is_sqlite:
        with store.begin() as conn:
            conn.execute(text("ALTER TABLE crm_people ALTER COLUMN modified TYPE text"))
    (accepted,) = migrate_destinations(store, RestProvider.from_yaml(retyped), accept=True)
    assert accepted.status == "pending" and accepted.next_revision == 2
    assert [r for r, _ in versions(store)] == [1, 2] and "accepted as altered by the operator" in versions(store)[1][1]
    (now,) = plan_destinations(store, RestProvider.from_yaml(retyped))
    assert now.status == "up to date"


def test_a_table_made_before_migrations_were_recorded_is_adopted_with_its_rows(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    crm = RestProvider.from_yaml(contacts_yaml(tmp_path))
    table = crm.tables()["contacts"]
    table.create(store.engine)  # as the first-sync creation of earlier versions did
    with store.begin() as conn:
        conn.execute(table.insert().values(integration_id=1, contact_id="c-9", email="x@y.z"))
    grown = RestProvider.from_yaml(contacts_yaml(tmp_path, lambda d: columns(d).update(phone="phone")))
    (plan,) = migrate_destinations(store, grown)
    assert [s.describe() for s in plan.steps] == ["adopt existing table crm_people (no revision recorded)",
                                                  "add column phone text"]
    assert [r for r, _ in versions(store)] == [1]
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT email, phone FROM crm_people")).one() == ("x@y.z", None)


def test_cli_rest_migrate_check_apply_json(store, db_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = contacts_yaml(tmp_path)
    env = {"INTEGRATIONS_DATABASE_URL": db_url}
    check = CliRunner().invoke(cli, ["rest", "migrate", str(path), "--check"], env=env)
    assert check.exit_code == 1, check.output
    assert "crm_people (resource contacts): revision 0 -> 1:" in check.output and "create table crm_people" in check.output
    assert not inspect(store.engine).has_table("crm_people")
    done = CliRunner().invoke(cli, ["rest", "migrate", str(path)], env=env)
    assert done.exit_code == 0, done.output
    assert "applied 1 migration(s)" in done.output
    again = CliRunner().invoke(cli, ["rest", "migrate", str(path), "--json"], env=env)
    assert again.exit_code == 0
    assert json.loads(again.output)["tables"][0] | {"steps": []} == {
        "table": "crm_people", "resource": "contacts", "status": "up to date", "revision": 1, "next_revision": 1,
        "steps": [], "refused": [], "notes": []}
    retyped = contacts_yaml(tmp_path, lambda d: columns(d).update(vip={"path": "vip", "type": "integer"}),
                            name="retyped.yaml")
    refused = CliRunner().invoke(cli, ["rest", "migrate", str(retyped)], env=env)
    assert refused.exit_code == 1 and "column vip changes type from boolean to integer" in refused.output
    assert "applied 0 migration(s); 1 table(s) left as they are" in refused.output
    bad = CliRunner().invoke(cli, ["rest", "migrate", str(tmp_path / "none.yaml")], env=env)
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_definitions_without_the_providers_listener_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    crm = RestProvider.from_yaml(contacts_yaml(tmp_path))
    with pytest.raises(IntegrationsError, match="provider 'crm' needs its listener .*provider.listener"):
        build_definitions(providers=[crm], listeners=[], sensors=False, operator_jobs=False)
    other = RestProvider.from_yaml(contacts_yaml(tmp_path))
    with pytest.raises(IntegrationsError, match="needs its listener"):  # another provider's listener is not its own
        build_definitions(providers=[crm], listeners=[other.listener], sensors=False, operator_jobs=False)
    assert build_definitions(providers=[crm], listeners=[crm.listener], sensors=False, operator_jobs=False)


def test_two_declarative_providers_keep_to_their_own_tables(store, db_url, tmp_path, dagster_instance) -> None:  # type: ignore[no-untyped-def]
    from tests.support.rest_app import rest_providers

    for provider in rest_providers():
        migrate_destinations(store, provider)
    ref = DefinitionsRef("tests.support.rest_app", "make_defs", {"database_url": db_url})
    with FakeContacts(contacts=7, api_key="k") as fake:
        integ = store.create_integration(provider_key="contacts", name="c", metadata={"base_url": fake.url},
                                         credentials={"api_key": "k"})
        assert execute_sync(ref, "contacts", integ.id, instance=dagster_instance).status == DagsterRunStatus.SUCCESS
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM crm_contacts")).scalar() == 7
        assert conn.execute(text("SELECT count(*) FROM rest_github_issues")).scalar() == 0
        assert conn.execute(select(text("1")).select_from(text("rest_table_versions"))).all()


def test_two_migrations_at_once_apply_one_revision(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    path = contacts_yaml(tmp_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            (plan,) = migrate_destinations(store, RestProvider.from_yaml(path))
            results.append(plan.status)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(results) == ["pending", "up to date"]  # serialised: one applied, one found it done
    assert [r for r, _ in versions(store)] == [1]
