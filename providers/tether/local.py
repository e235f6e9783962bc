"""The app side of the bundled Tether provider: its local table and the listener applying snapshots.

``tether_records`` is the app's own table (not the framework's): a local edit updates a row *and*
records its mutation in the same transaction (``edit``), and the listener applies every server
snapshot (pulled, or a conflict's server state) with the server's version. Idempotent: a retried
snapshot writes the same row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from integrations_dagster import Outbox, Store, current_sync, listener
from providers.tether.provider import TetherSnapshot

local_metadata = MetaData()
tether_records = Table(
    "tether_records",
    local_metadata,
    Column("integration_id", Integer, primary_key=True),
    Column("entity", String(200), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("version", Integer, nullable=True),  # the server's version this row was last reconciled with
    Column("source", String(20), nullable=False),  # local | pull | conflict
)
_ready: set[str] = set()


def ensure_tables(store: Store) -> None:
    if store.url not in _ready:
        local_metadata.create_all(store.engine)
        _ready.add(store.url)


def upsert(conn: Connection, dialect_sqlite: bool, **row: Any) -> None:
    ins = (sqlite_insert if dialect_sqlite else pg_insert)(tether_records).values(**row)
    conn.execute(ins.on_conflict_do_update(
        index_elements=["integration_id", "entity", "key"],
        set_={k: ins.excluded[k] for k in ("data", "version", "source")},
    ))


def edit(store: Store, integration_id: int, entity: str, key: str, data: dict[str, Any], *,
         operation: str = "update", base_version: int | None = None) -> str:
    """A local write and its outbox mutation in one transaction; returns the mutation id."""
    ensure_tables(store)
    payload = dict(data)
    if base_version is not None:
        payload["base_version"] = base_version
    with store.begin() as conn:
        upsert(conn, store.is_sqlite, integration_id=integration_id, entity=entity, key=str(key), data=data,
               version=base_version, source="local")
        return Outbox(store).record(conn, integration_id, entity=entity, key=key, operation=operation,
                                    payload=payload)


def read(store: Store, integration_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    ensure_tables(store)
    with store.engine.connect() as conn:
        rows = conn.execute(select(tether_records).where(tether_records.c.integration_id == integration_id))
        return {(r.entity, r.key): {"data": r.data, "version": r.version, "source": r.source} for r in rows}


@listener(TetherSnapshot)
def apply_tether_snapshot(event: TetherSnapshot) -> None:
    """Apply the server's state locally (Tether's SnapshotApplicator): its fields and its version."""
    store = current_sync().store
    assert store is not None
    ensure_tables(store)
    record = dict(event.record)
    version = record.pop("version", None)
    data = {k: v for k, v in record.items() if k not in ("entity", "key")}
    with store.begin() as conn:
        upsert(conn, store.is_sqlite, integration_id=event.integration_id, entity=event.entity, key=event.key,
               data=data, version=version, source=event.source)
