"""The per-process store cache is an explicit object: resettable, and it never hands out a store that
believes a dropped-and-recreated database is still migrated (bench/github.py --peers, repeat >= 2)."""

from __future__ import annotations

import uuid

import psycopg

from integrations_dagster import Store
from integrations_dagster.store.store import StoreCache

from tests.conftest import DB_PREFIX, PG_ADMIN_URL


def _recreate(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def test_a_cached_store_survives_its_database_being_dropped_and_created_again() -> None:
    name = f"{DB_PREFIX}_cache_{uuid.uuid4().hex[:8]}".replace("-", "_")
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    cache = StoreCache()
    try:
        _recreate(name)
        first = cache.get(url)
        first.create_integration(provider_key="synthetic", name="before")
        _recreate(name)  # what bench/github.py's fresh_database does between repeats
        again = cache.get(url)
        assert again is first and len(cache) == 1
        created = again.create_integration(provider_key="synthetic", name="after")  # tables exist again
        assert [i.name for i in again.list_integrations()] == ["after"] and created.id == 1
    finally:
        cache.reset()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert len(cache) == 0


def test_the_process_cache_is_the_store_class_attribute(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/c.sqlite"
    assert Store.for_url(url) is Store.cache.get(url) is Store.for_url(url)
    assert Store(url) is not Store.for_url(url)  # Store(url): a store of its own, outside the cache
