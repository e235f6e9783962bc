"""Tables a provider owns: its destination tables, created and upgraded by the provider, not the framework.

A provider that writes into tables of its own declares them as ``Provider.owned_tables =
ProviderTables(owner=..., metadata=..., version=...)``. Before the engine runs the provider's
enumeration or listeners in a process, it makes sure the tables exist at ``version`` in the
integrations database (``Store.ensure_provider_tables``): a new database gets them created
(``metadata.create_all``), an older version is upgraded by ``upgrade`` (default: create what is
missing), and the version is recorded in ``provider_schemas``. The framework's own Alembic
migrations never create provider tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, MetaData


def create_missing(metadata: MetaData) -> Callable[[Connection, int], None]:
    """The default upgrade: create the tables (and their indexes) that do not exist yet."""

    def upgrade(conn: Connection, from_version: int) -> None:
        metadata.create_all(conn, checkfirst=True)

    return upgrade


@dataclass(frozen=True)
class ProviderTables:
    #: Who owns the tables (several providers may share one owner, e.g. both GitHub providers).
    owner: str
    metadata: MetaData
    #: Bump it when the tables change, and give ``upgrade`` the steps from each older version.
    version: int = 1
    #: ``upgrade(conn, from_version)``, run in one transaction; ``from_version`` is 0 for a new database.
    upgrade: Callable[[Connection, int], None] | None = None

    def upgrade_from(self, conn: Connection, from_version: int) -> None:
        (self.upgrade or create_missing(self.metadata))(conn, from_version)
