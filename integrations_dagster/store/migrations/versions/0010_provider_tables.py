"""provider-owned tables: the framework stops creating the GitHub provider's tables (issue 10)

Revision ID: 0010_provider_tables
Revises: 0013_outbox_cycle

``provider_schemas`` records, per owner, the version of the tables a provider created itself
(``authoring.tables.ProviderTables``). Migration 0001 used to create ``github_issues`` and
``activities`` for the bundled GitHub provider; a database that has them keeps them and their rows
untouched, and they are recorded here as version 1 of the ``github`` owner, so the provider adopts
them instead of creating them. A new database gets neither table from the framework.
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010_provider_tables"
down_revision = "0013_outbox_cycle"
branch_labels = None
depends_on = None

#: Tables earlier framework migrations created on a provider's behalf: owner -> (tables, version).
_LEGACY = {"github": (("github_issues", "activities"), 1)}


def upgrade() -> None:
    table = op.create_table(
        "provider_schemas",
        sa.Column("owner", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    rows = [{"owner": owner, "version": version, "updated_at": datetime.now(UTC)}
            for owner, (tables, version) in _LEGACY.items() if set(tables) <= existing]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_table("provider_schemas")
