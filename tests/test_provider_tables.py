"""Providers own their tables: the framework's migrations create only framework tables for a new
database; a database made before ``0010_provider_tables`` keeps the GitHub tables and their rows and
the provider adopts them. Both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import MetaData, inspect, select, text

from integrations_dagster import ProviderTables, Store
from integrations_dagster.store import models
from providers.github.tables import GITHUB_TABLES, activities, github_issues

from tests.conftest import DB_PREFIX, PG_ADMIN_URL

MIGRATIONS = Path(models.__file__).parent / "migrations"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own, with nothing in it (these tests start from before any migration)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.sqlite"
        return
    name = f"{DB_PREFIX}_ptables_{uuid.uuid4().hex[:8]}".replace("-", "_")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _upgrade(store: Store, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def _versions(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {r.owner: r.version for r in conn.execute(select(models.provider_schemas))}


def test_a_new_database_gets_only_framework_tables_until_the_provider_runs(empty_url: str) -> None:
    store = Store(empty_url)
    store.migrate()
    assert not {"github_issues", "activities"} & _tables(store)
    assert {"integrations", "sync_runs", "sync_items", "provider_schemas"} <= _tables(store)
    store.ensure_provider_tables(GITHUB_TABLES)
    assert {"github_issues", "activities"} <= _tables(store)
    assert _versions(store) == {"github": 1}
    store.engine.dispose()


def test_an_old_database_moves_forward_without_losing_provider_rows(empty_url: str) -> None:
    old = Store(empty_url)
    _upgrade(old, "0007_outbox")
    # What migration 0001 created before 0010_provider_tables: the GitHub tables, same columns.
    GITHUB_TABLES.metadata.create_all(old.engine)
    issue = {"integration_id": 1, "issue_id": 10, "number": 1, "title": "t", "state": "open", "user_login": "u",
             "labels": ["a"], "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-02T00:00:00Z",
             "html_url": None, "raw": {"id": 10}}
    activity = {"integration_id": 1, "source_id": "event:1", "stream": "events", "text": "x", "source_url": None,
                "occurred_at": "2026-01-01T00:00:00Z", "raw": {}}
    with old.begin() as conn:
        conn.execute(github_issues.insert(), [issue])
        conn.execute(activities.insert(), [activity])
    old.engine.dispose()

    store = Store(empty_url)
    store.migrate()  # 0007 -> head, through 0010_provider_tables
    assert _versions(store) == {"github": 1}  # adopted as version 1: the provider will not recreate them
    store.ensure_provider_tables(GITHUB_TABLES)
    with store.engine.connect() as conn:
        assert [dict(r._mapping) for r in conn.execute(select(github_issues))] == [issue]
        assert [dict(r._mapping) for r in conn.execute(select(activities))] == [activity]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == store.current_revision()
    store.engine.dispose()


def test_a_provider_upgrade_runs_once_from_the_recorded_version(empty_url: str) -> None:
    store = Store(empty_url)
    store.migrate()
    md = MetaData()
    calls: list[int] = []
    v1 = ProviderTables(owner="acme", metadata=md, version=1, upgrade=lambda conn, v: calls.append(v))
    v2 = ProviderTables(owner="acme", metadata=md, version=2, upgrade=lambda conn, v: calls.append(v))
    store.ensure_provider_tables(v1)
    store.ensure_provider_tables(v1)
    Store(empty_url).ensure_provider_tables(v2)  # another process with newer code
    assert calls == [0, 1] and _versions(store)["acme"] == 2
    with pytest.raises(RuntimeError, match="newer than this code's 1"):
        Store(empty_url).ensure_provider_tables(v1)  # older code against a newer database: refused
    store.engine.dispose()
