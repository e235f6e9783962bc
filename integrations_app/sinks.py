"""Where the demo's synthetic items land: a small table the application owns (not the framework)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from integrations_dagster import Store, SyncSettings, listener
from providers.synthetic import SyntheticItem

app_metadata = MetaData()
synthetic_rows = Table(
    "demo_synthetic_items",
    app_metadata,
    Column("integration_id", Integer, primary_key=True),
    Column("external_id", String(200), primary_key=True),
    Column("value", String(500), nullable=False),
    Column("payload", JSON, nullable=False),
)
_ready: set[str] = set()


def _store() -> Store:
    store = Store.for_url(SyncSettings().resolved_database_url())
    if store.url not in _ready:
        app_metadata.create_all(store.engine)
        _ready.add(store.url)
    return store


def upsert_synthetic(store: Store, event: SyntheticItem) -> None:
    insert = pg_insert if not store.is_sqlite else sqlite_insert
    stmt = insert(synthetic_rows).values(
        integration_id=event.integration_id, external_id=event.external_id, value=event.value,
        payload=event.model_dump(mode="json"),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["integration_id", "external_id"],
        set_={"value": stmt.excluded.value, "payload": stmt.excluded.payload},
    )
    with store.engine.begin() as conn:
        conn.execute(stmt)


@listener(SyntheticItem)
def store_synthetic_item(event: SyntheticItem) -> None:
    """Upsert the item (idempotent: a retry writes the same row). Poisoned items fail on purpose."""
    if event.poisoned:
        raise ValueError(f"item {event.external_id} is poisoned (failure injection)")
    upsert_synthetic(_store(), event)
