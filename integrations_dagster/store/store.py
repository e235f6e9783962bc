"""The state store: integrations, sync runs and sync items in SQLite or PostgreSQL.

One ``Store`` per database URL per process (``Store.for_url``, through ``StoreCache``). Migrations
run on first use.
Writes that must not race (starting a run, claiming a chunk, reconciling) run in one transaction
that locks the rows involved: ``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (a
database-wide write lock) on SQLite.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, overload

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, func, select, text, true
from sqlalchemy.engine import make_url

from integrations_dagster.authoring.integration import Integration
from integrations_dagster.errors import IntegrationNotFound, SyncItemNotFound
from integrations_dagster.security.secrets import CredentialCipher
from integrations_dagster.status import RUN_IN_FLIGHT, TERMINAL, UNFINISHED, ItemStatus, RunStatus
from integrations_dagster.store import models as m

if TYPE_CHECKING:
    from integrations_dagster.authoring.tables import ProviderTables

__all__ = ["RUN_IN_FLIGHT", "TERMINAL", "UNFINISHED", "Store", "as_utc", "chunked", "normalise_url", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were written as UTC (a datetime in, a datetime out)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (installed); SQLite paths get their folder created."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return parsed.render_as_string(hide_password=False)


class StoreCache:
    """One ``Store`` (one connection pool, migrated once) per database URL in this process.

    ``Store.for_url`` goes through the process's cache, ``Store.cache``. A store handed out again is
    first checked to still be at the migrations' head (one ``SELECT`` of ``alembic_version``): a
    database dropped and created again under the same URL is migrated again rather than served with
    stale knowledge. ``reset()`` disposes every pool and forgets every store (tests, after a fork).
    """

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> Store:
        key = normalise_url(url)
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = Store(key)
                store.migrate()
                self._stores[key] = store
                return store
        store.revalidate()
        return store

    def reset(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.engine.dispose()
            self._stores.clear()

    def __len__(self) -> int:
        return len(self._stores)


class Store:
    #: The per-process stores by URL (see ``StoreCache``); ``Store(url)`` makes an uncached one.
    cache: ClassVar[StoreCache]

    def __init__(self, url: str, *, cipher: CredentialCipher | None = None) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine()
        self.cipher = cipher or CredentialCipher()
        self._migrated = False
        self._provider_tables: set[tuple[str, int]] = set()

    @classmethod
    def for_url(cls, url: str) -> Store:
        """This process's store for ``url`` (``Store.cache``), migrated to head."""
        return cls.cache.get(url)

    @classmethod
    def forget_all(cls) -> None:
        """Dispose every cached store (tests, and after a fork): ``Store.cache.reset()``."""
        cls.cache.reset()

    def revalidate(self) -> None:
        """Migrate again if the database is no longer at head (it was dropped and created anew)."""
        from integrations_dagster.store.revisions import at_head

        with self.engine.connect() as conn:
            if at_head(conn):
                return
        self._migrated = False
        self._provider_tables.clear()
        self.migrate()

    # --- engine and transactions ---------------------------------------------------------
    def _make_engine(self) -> Engine:
        if self.is_sqlite:
            engine = create_engine(self.url, connect_args={"timeout": 60, "isolation_level": None})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                # Writes through ``Store.begin`` take the write lock up front, so a read-then-write
                # transaction never fails to upgrade; every other transaction (reads, and listeners'
                # write-first upserts) begins deferred so readers never queue behind a writer.
                write = conn.get_execution_options().get("integrations_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        engine = create_engine(self.url, pool_size=5, max_overflow=10)
        _ping_when_idle(engine, self.PING_AFTER_IDLE_SECONDS)
        return engine

    #: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out (see
    #: ``_ping_when_idle``).
    PING_AFTER_IDLE_SECONDS: ClassVar[float] = 1.0

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite: ``BEGIN IMMEDIATE``, the database-wide write lock)."""
        with self.engine.connect() as conn:
            conn.execution_options(integrations_write=True)
            with conn.begin():
                yield conn

    #: After an enumeration of at least this many items, PostgreSQL's planner statistics of the item
    #: table are refreshed (``ANALYZE``): autovacuum analyses a table at most once a minute, so during a
    #: big first sync the planner still believes the integration has a few hundred rows and picks a scan
    #: of all its rows for each chunk's "latest success per external id" probe (engine.supersede)
    #: instead of the (integration_id, external_id) index: seconds per chunk instead of milliseconds.
    #: A run whose items were all applied at write (engine.apply) has no chunk step: no ANALYZE.
    ANALYZE_AFTER_ITEMS: ClassVar[int] = 5000

    def refresh_statistics(self, items_added: int) -> bool:
        """``ANALYZE`` the item table on PostgreSQL after ``items_added`` >= ``ANALYZE_AFTER_ITEMS`` new
        rows (SQLite plans these probes by index without statistics); returns whether it was started.

        It runs on a thread of its own (a connection of its own; ``ANALYZE`` takes no lock that blocks
        reads or writes): the enumeration that asked for it does not wait for its 0.1-0.5 s, and the
        chunks it matters for (their probes) start meanwhile. If the process ends first, PostgreSQL
        drops the half-done ``ANALYZE`` with the connection and autovacuum's next one stands."""
        if self.is_sqlite or items_added < self.ANALYZE_AFTER_ITEMS:
            return False

        def analyze() -> None:
            try:
                with self.engine.connect() as conn:
                    conn.execute(text(f"ANALYZE {m.sync_items.name}"))
                    conn.commit()
            except Exception as exc:  # statistics are an optimisation: never a failure of the sync
                logging.getLogger("integrations_dagster").warning("ANALYZE of the item table failed: %s", exc)

        threading.Thread(target=analyze, name="analyze-sync-items", daemon=True).start()
        return True

    def for_update(self, stmt: Any) -> Any:
        return stmt if self.is_sqlite else stmt.with_for_update()

    def migrate(self) -> None:
        """Apply Alembic migrations up to head (idempotent; serialised on PostgreSQL)."""
        if self._migrated:
            return
        from integrations_dagster.store.revisions import at_head

        with self.engine.connect() as conn:
            if at_head(conn):  # the common case, answered without importing Alembic
                self._migrated = True
                return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(728130001)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        self._migrated = True

    def ensure_provider_tables(self, tables: ProviderTables) -> None:
        """Create or upgrade a provider's own tables to ``tables.version`` (once per store and owner;
        see ``authoring.tables``). The engine calls it before it runs the provider."""
        key = (tables.owner, tables.version)
        if key in self._provider_tables:
            return
        self.migrate()
        from integrations_dagster.store import provider_tables

        provider_tables.ensure(self, tables)
        self._provider_tables.add(key)

    def id_in(self, column: Any, ids: Sequence[int]) -> Any:
        """``column IN ids``; on PostgreSQL ``= ANY(array)`` so the statement text stays short and cached."""
        if self.is_sqlite:
            return column.in_(list(ids))
        from sqlalchemy import BigInteger, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                return None

    # --- integrations --------------------------------------------------------------------
    def create_integration(
        self,
        *,
        provider_key: str,
        name: str,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        sync_interval_minutes: int | None = None,
        sync_cron: str | None = None,
        tenant: str = "default",
        rate_limit: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Integration:
        now = now or utcnow()
        encrypted = self.cipher.encrypt(credentials)
        with self.begin() as conn:
            new_id = conn.execute(
                m.integrations.insert()
                .values(
                    tenant=tenant,
                    provider_key=provider_key,
                    name=name,
                    metadata=metadata or {},
                    credentials=encrypted,
                    sync_interval_minutes=sync_interval_minutes,
                    sync_cron=sync_cron,
                    rate_limit=rate_limit,
                    enabled=True,
                    health="healthy",
                    next_sync_at=now,  # a new integration is due at once
                    created_at=now,
                    updated_at=now,
                )
                .returning(m.integrations.c.id)
            ).scalar_one()
        return self.get_integration(int(new_id))

    def _row_to_integration(self, row: Any, *, decrypt: bool = True) -> Integration:
        data = dict(row._mapping)
        stored = data.pop("credentials", None)
        for key in ("last_synced_at", "next_sync_at", "created_at", "updated_at"):
            data[key] = as_utc(data.get(key))
        data["credentials"] = self.cipher.decrypt(stored) if decrypt else {}
        data["metadata"] = data.get("metadata") or {}
        return Integration(**data)

    def integration_from_row(self, row: Any) -> Integration:
        """The ``Integration`` of an ``integrations`` row read elsewhere (credentials decrypted)."""
        return self._row_to_integration(row)

    def get_integration(self, integration_id: int, *, tenant: str | None = None, decrypt: bool = True) -> Integration:
        stmt = select(m.integrations).where(m.integrations.c.id == integration_id)
        if tenant is not None:
            stmt = stmt.where(m.integrations.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise IntegrationNotFound(integration_id)
        return self._row_to_integration(row, decrypt=decrypt)

    def get_integrations(self, integration_ids: Sequence[int]) -> dict[int, Integration]:
        """``{id: Integration}`` of the given ids in one query (credentials decrypted); ids without a
        row are absent."""
        if not integration_ids:
            return {}
        stmt = select(m.integrations).where(self.id_in(m.integrations.c.id, [int(i) for i in integration_ids]))
        with self.engine.connect() as conn:
            return {int(r.id): self._row_to_integration(r) for r in conn.execute(stmt)}

    def list_integrations(
        self, *, provider_key: str | None = None, tenant: str | None = None, decrypt: bool = False
    ) -> list[Integration]:
        stmt = select(m.integrations).order_by(m.integrations.c.id)
        if provider_key is not None:
            stmt = stmt.where(m.integrations.c.provider_key == provider_key)
        if tenant is not None:
            stmt = stmt.where(m.integrations.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [self._row_to_integration(r, decrypt=decrypt) for r in conn.execute(stmt)]

    def integration_ids(self, provider_key: str) -> list[int]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(m.integrations.c.id).where(m.integrations.c.provider_key == provider_key)
                ).scalars()
            )

    def update_integration(self, integration_id: int, *, tenant: str | None = None, **values: Any) -> Integration:
        if "credentials" in values:
            values["credentials"] = self.cipher.encrypt(values["credentials"])
        values["updated_at"] = utcnow()
        stmt = m.integrations.update().where(m.integrations.c.id == integration_id).values(**values)
        if tenant is not None:
            stmt = stmt.where(m.integrations.c.tenant == tenant)
        with self.begin() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise IntegrationNotFound(integration_id)
        return self.get_integration(integration_id)

    def delete_integration(self, integration_id: int, *, tenant: str | None = None) -> None:
        stmt = m.integrations.delete().where(m.integrations.c.id == integration_id)
        if tenant is not None:
            stmt = stmt.where(m.integrations.c.tenant == tenant)
        with self.begin() as conn:
            # Children first so SQLite without FK enforcement and PostgreSQL agree.
            exists = conn.execute(
                select(m.integrations.c.id).where(m.integrations.c.id == integration_id)
                .where(m.integrations.c.tenant == tenant if tenant is not None else true())
            ).first()
            if exists is None:
                raise IntegrationNotFound(integration_id)
            conn.execute(m.sync_items.delete().where(m.sync_items.c.integration_id == integration_id))
            conn.execute(m.sync_runs.delete().where(m.sync_runs.c.integration_id == integration_id))
            conn.execute(m.requests_log.delete().where(m.requests_log.c.integration_id == integration_id))
            conn.execute(m.rate_budgets.delete().where(m.rate_budgets.c.integration_id == integration_id))
            conn.execute(stmt)

    # --- sync runs -----------------------------------------------------------------------
    def get_run(self, run_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(m.sync_runs).where(m.sync_runs.c.id == run_id)).first()
        if row is None:
            raise LookupError(f"sync run {run_id} not found")
        return _run_dict(row)

    def runs_for_integration(self, integration_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(m.sync_runs)
                .where(m.sync_runs.c.integration_id == integration_id)
                .order_by(m.sync_runs.c.id.desc())
                .limit(limit)
            )
            return [_run_dict(r) for r in rows]

    def run_for_dagster_run(self, dagster_run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(m.sync_runs).where(m.sync_runs.c.dagster_run_id == dagster_run_id).order_by(m.sync_runs.c.id)
            ).first()
        return _run_dict(row) if row is not None else None

    def in_flight_runs(self, integration_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(m.sync_runs)
                .where(m.sync_runs.c.integration_id == integration_id)
                .where(m.sync_runs.c.status.in_(RUN_IN_FLIGHT))
            )
            return [_run_dict(r) for r in rows]

    _STATUS = select(m.sync_runs.c.status).where(m.sync_runs.c.id == bindparam("b_run"))
    _STATUS_KEY_SHARE = _STATUS.with_for_update(read=True, key_share=True)
    _STATUS_SHARE = _STATUS.with_for_update(read=True)

    def run_status(self, conn: Connection, run_id: int, *, lock: bool = False, key_share: bool = False) -> str | None:
        """The run's status in ``conn``'s transaction (None if the run is gone).

        ``lock``: on PostgreSQL hold the row ``FOR SHARE`` until the transaction ends, so a
        concurrent transition (``UPDATE ... WHERE status = ...``) waits for it; on SQLite a write
        transaction already holds the database-wide write lock. ``key_share``: ``FOR KEY SHARE``
        instead, which only ``SELECT ... FOR UPDATE`` (and deletes) wait for: the run's discard
        (``runs.discard_enumeration``) takes that lock first, while the request log's count updates
        on the same row go on (the enumeration's writer holds this for a whole batch, which, applied
        at write, includes its listeners: ``engine.apply``).
        """
        if lock and not self.is_sqlite:
            stmt = self._STATUS_KEY_SHARE if key_share else self._STATUS_SHARE
        else:
            stmt = self._STATUS
        return conn.execute(stmt, {"b_run": int(run_id)}).scalar()

    _TRANSITION = m.sync_runs.update().where(
        m.sync_runs.c.id == bindparam("b_run"), m.sync_runs.c.status.in_(bindparam("b_states", expanding=True)))

    def transition_run(
        self, conn: Connection, run_id: int, expected: str | Sequence[str], action: str, **values: Any
    ) -> None:
        """Compare-and-set a run's state: ``UPDATE sync_runs SET ... WHERE id = run AND status IN
        expected``; raises ``SyncRunStateConflict`` (``SyncRunDiscarded`` when the run was discarded)
        when no row matched, i.e. another process moved the run first."""
        from integrations_dagster.errors import SyncRunDiscarded, SyncRunStateConflict

        states = (expected,) if isinstance(expected, str) else tuple(expected)
        # One statement built once; the SET clause is the parameters' columns (plain values only).
        done = conn.execute(self._TRANSITION, {"b_run": int(run_id), "b_states": [str(s) for s in states],
                                               **values}).rowcount
        if done == 1:
            return
        row = conn.execute(
            select(m.sync_runs.c.status, m.sync_runs.c.enumerated_at).where(m.sync_runs.c.id == run_id)
        ).first()
        found = row.status if row is not None else None
        if row is None or (row.status == RunStatus.FAILED and row.enumerated_at is None):
            raise SyncRunDiscarded(run_id, states, found, action)
        raise SyncRunStateConflict(run_id, states, found, action)

    _ITEM_COUNTS = (select(m.sync_items.c.status, func.count()).where(m.sync_items.c.run_id == bindparam("b_run"))
                    .group_by(m.sync_items.c.status))  # built once: its cache key is computed once

    def item_counts(self, conn: Connection, run_id: int) -> dict[str, int]:
        rows = conn.execute(self._ITEM_COUNTS, {"b_run": int(run_id)})
        counts = {str(s): 0 for s in (*UNFINISHED, *TERMINAL)}
        for status, n in rows:
            counts[status] = int(n)
        return counts

    _ITEM_COLUMNS = (
        "run_id", "integration_id", "chunk", "status", "attempts", "deferrals", "external_id", "checkpoint",
        "event_type", "payload", "created_at",
    )

    def insert_items(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert dispatched items; ``payload`` may be JSON text (as the session produces) or an object.

        PostgreSQL: one ``COPY`` (an executemany costs a round trip per row); SQLite: one executemany.
        """
        if not rows:
            return
        dumps = json.dumps

        def payload(value: Any) -> str:
            return value if isinstance(value, str) else dumps(value)

        tuples = [
            (r["run_id"], r["integration_id"], r["chunk"], r["status"], r["attempts"], r["deferrals"],
             r["external_id"], dumps(r["checkpoint"]), r["event_type"], payload(r["payload"]), r["created_at"])
            for r in rows
        ]
        self.insert_item_rows(conn, tuples)

    def insert_item_rows(self, conn: Connection, rows: Sequence[tuple[Any, ...]], *,
                         ids: Sequence[int] | None = None) -> None:
        """``insert_items`` for rows already in ``_ITEM_COLUMNS`` order, checkpoint and payload as JSON text
        (the session's hot path: no per-row dict). ``ids``: the rows' item ids, taken by the caller
        (PostgreSQL's parallel writers, in dispatch order); else the table's sequence assigns them."""
        if not rows:
            return
        if ids is not None:
            from integrations_dagster.store.items import copy_items_with_ids  # (items imports this module)

            copy_items_with_ids(conn, rows, ids, [False] * len(rows), utcnow())
            return
        cols = self._ITEM_COLUMNS
        if self.is_sqlite:
            marks = ", ".join("?" for _ in cols)
            sqlite_rows = [(*r[:10], r[10].replace(tzinfo=None).isoformat(sep=" ")) for r in rows]
            conn.exec_driver_sql(f"INSERT INTO sync_items ({', '.join(cols)}) VALUES ({marks})", sqlite_rows)
            return
        driver = conn.connection.driver_connection  # psycopg 3's connection (COPY)
        if driver is None:  # pragma: no cover - a checked-out pool connection always has one
            raise RuntimeError("no driver connection for COPY")
        cursor = driver.cursor()
        with cursor.copy(f"COPY sync_items ({', '.join(cols)}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    def get_item(self, item_id: int, *, tenant: str | None = None) -> dict[str, Any]:
        stmt = select(m.sync_items).where(m.sync_items.c.id == item_id)
        if tenant is not None:
            stmt = stmt.join(m.integrations, m.integrations.c.id == m.sync_items.c.integration_id).where(
                m.integrations.c.tenant == tenant
            )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise SyncItemNotFound(item_id)
        return _item_dict(row)

    def failed_items(self, *, integration_id: int | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        stmt = (
            select(m.sync_items)
            .join(m.integrations, m.integrations.c.id == m.sync_items.c.integration_id)
            .where(m.sync_items.c.status == ItemStatus.FAILED)
            .order_by(m.sync_items.c.id)
        )
        if integration_id is not None:
            stmt = stmt.where(m.sync_items.c.integration_id == integration_id)
        if tenant is not None:
            stmt = stmt.where(m.integrations.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_item_dict(r) for r in conn.execute(stmt)]

    def items_for_run(self, run_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(m.sync_items).where(m.sync_items.c.run_id == run_id).order_by(m.sync_items.c.id))
            return [_item_dict(r) for r in rows]


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling that pings only connections that sat in the pool for more than
    ``idle_seconds``: ``pool_pre_ping`` pings at every checkout, a round trip of its own, and a small sync
    checks a connection out about eight times in a few milliseconds. A connection that was idle longer
    (a server restart, ``idle_session_timeout``, a failover may have closed it) is pinged and, when dead,
    replaced before use (SQLAlchemy's pool events: a ``checkout`` handler that raises
    ``DisconnectionError`` makes the pool discard the connection and hand out a fresh one). One that
    died within the last second fails its statement: the error invalidates the pool (every pooled
    connection is replaced) and the step fails, or is retried, with nothing lost."""
    import time

    from sqlalchemy import exc as sa_exc

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_conn: Any, record: Any) -> None:
        record.info["integrations_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("integrations_idle_since", None)
        if since is None or time.monotonic() - since <= idle_seconds:
            return  # new (just connected) or back in the pool a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception:
            alive = False
        if not alive:
            raise sa_exc.DisconnectionError("a pooled connection is gone; reconnecting")


def _run_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("started_at", "enumerated_at", "finished_at"):
        data[key] = as_utc(data.get(key))
    return data


def _item_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("first_attempt_at", "next_attempt_at", "claimed_at", "finished_at", "created_at"):
        data[key] = as_utc(data.get(key))
    return data


def chunked(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for v in values:
        batch.append(v)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


Store.cache = StoreCache()
