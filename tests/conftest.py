"""Shared fixtures: every store/engine test runs on SQLite and on a real PostgreSQL server.

PostgreSQL: ``INTEGRATIONS_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is the
admin connection; each xdist worker gets its own database ``<prefix>_<worker>`` (prefix from
``INTEGRATIONS_TEST_DB_PREFIX``, default ``itest``) and tables are emptied before each test. A server
that cannot be reached fails the run: the PostgreSQL tests never skip silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from integrations_dagster import Store
from integrations_dagster.store import models as _models

PG_ADMIN_URL = os.environ.get("INTEGRATIONS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB_PREFIX = os.environ.get("INTEGRATIONS_TEST_DB_PREFIX", "itest")


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    name = f"{DB_PREFIX}_{worker_id}".replace("-", "_")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the tests and is not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    Store.forget_all()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    wid = getattr(request.config, "workerinput", {}).get("workerid")
    return wid or "main"


def _empty_tables(store: Store) -> None:
    from sqlalchemy import inspect

    from providers.github.tables import metadata as github_metadata

    names = [t.name for t in reversed(_models.metadata.sorted_tables)]
    # Providers' own tables exist once a provider ran against this database (they are emptied, never
    # dropped: the store remembers it created them).
    existing = set(inspect(store.engine).get_table_names())
    names += [t.name for t in reversed(github_metadata.sorted_tables) if t.name in existing]
    # Destination tables of declarative REST providers are dropped (their revisions in
    # rest_table_versions are emptied with the framework's tables): each test migrates them anew.
    drop: set[str] = set()
    if "rest_table_versions" in existing:
        with store.engine.connect() as conn:
            drop = {r[0] for r in conn.execute(text("SELECT DISTINCT table_name FROM rest_table_versions"))}
    drop |= {n for n in existing if n.startswith("rest_") and n not in names and n != "rest_table_versions"}
    drop &= existing
    with store.begin() as conn:
        for n in sorted(drop):
            conn.execute(text(f'DROP TABLE IF EXISTS "{n}"'))
    with store.begin() as conn:
        if store.is_sqlite:
            for n in names:
                conn.execute(text(f'DELETE FROM "{n}"'))
        else:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/integrations.sqlite"
    url = request.getfixturevalue("pg_url")
    _empty_tables(Store.for_url(url))
    return url


@pytest.fixture
def store(db_url: str) -> Store:
    return Store.for_url(db_url)


@pytest.fixture
def dagster_instance(tmp_path):  # type: ignore[no-untyped-def]
    from dagster import instance_for_test

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def pg_store(pg_url: str) -> Store:
    """PostgreSQL only: for paths that exist only there (advisory-lock claims, background writes)."""
    store = Store.for_url(pg_url)
    _empty_tables(store)
    return store
