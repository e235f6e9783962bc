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


def test_pooled_connections_are_pinged_only_after_sitting_idle(pg_store) -> None:  # type: ignore[no-untyped-def]
    """A small sync checks a connection out about eight times in a few milliseconds; pinging each
    (``pool_pre_ping``) was a round trip per checkout. Now only a connection idle for more than
    ``Store.PING_AFTER_IDLE_SECONDS`` is pinged, and one the server closed meanwhile is replaced before
    use (nothing fails). The pings are counted on SQLAlchemy's dialect (the call the pool makes)."""
    import time

    from sqlalchemy import text

    store = pg_store
    dialect = store.engine.dialect
    pings: list[int] = []
    real_ping = dialect.do_ping

    def counting_ping(dbapi_conn):  # type: ignore[no-untyped-def]
        pings.append(1)
        return real_ping(dbapi_conn)

    dialect.do_ping = counting_ping  # type: ignore[method-assign]
    try:
        store.create_integration(provider_key="synthetic", name="warm")
        for _ in range(5):  # back-to-back checkouts: no ping
            store.list_integrations()
        assert pings == []
        with store.engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:  # the server closes it while idle
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(store.PING_AFTER_IDLE_SECONDS + 0.2)
        assert [i.name for i in store.list_integrations()] == ["warm"]  # pinged, found dead, replaced
        assert pings == [1]
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        del dialect.do_ping
