"""Creating and upgrading the tables a provider owns (``authoring.tables.ProviderTables``).

The version each owner's tables are at is in ``provider_schemas`` (migration 0010_provider_tables).
One transaction per owner: read the version (locked), run the provider's upgrade from it, record the
new version. Serialised on PostgreSQL by an advisory transaction lock, on SQLite by ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, text

from integrations_dagster.store import models as m

if TYPE_CHECKING:
    from integrations_dagster.authoring.tables import ProviderTables
    from integrations_dagster.store.store import Store

_LOCK_KEY = 728130010


def recorded_version(store: Store, owner: str) -> int:
    """The version of ``owner``'s tables in this database (0: never created)."""
    with store.engine.connect() as conn:
        row = conn.execute(select(m.provider_schemas.c.version).where(m.provider_schemas.c.owner == owner)).first()
    return int(row.version) if row is not None else 0


def ensure(store: Store, tables: ProviderTables) -> int:
    """Bring ``tables`` to ``tables.version``; returns the version found before (idempotent)."""
    from integrations_dagster.store.store import utcnow

    with store.begin() as conn:
        if not store.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        row = conn.execute(
            store.for_update(select(m.provider_schemas.c.version).where(m.provider_schemas.c.owner == tables.owner))
        ).first()
        found = int(row.version) if row is not None else 0
        if found > tables.version:
            raise RuntimeError(
                f"the {tables.owner!r} tables in this database are at version {found}, newer than this "
                f"code's {tables.version}: upgrade the code, not the database"
            )
        if found < tables.version:
            tables.upgrade_from(conn, found)
            values = {"version": tables.version, "updated_at": utcnow()}
            if row is None:
                conn.execute(m.provider_schemas.insert().values(owner=tables.owner, **values))
            else:
                conn.execute(m.provider_schemas.update().where(m.provider_schemas.c.owner == tables.owner)
                             .values(**values))
    return found
