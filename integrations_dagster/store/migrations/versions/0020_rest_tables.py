"""declarative REST destinations: a versioned migration per configured table (issue 14)

Revision ID: 0020_rest_tables
Revises: 0010_provider_tables

``rest_table_versions`` records every migration applied to a declarative REST provider's
destination table (``integrations rest migrate my_api.yaml``): one row per table and revision,
with the table's schema as the configuration declared it at that revision (JSON) and the
operations that brought it there. A sync compares the configuration with the latest revision and
refuses to write into a table whose configuration changed since (docs/REST_PROVIDERS.md).
"""
import sqlalchemy as sa
from alembic import op

revision = "0020_rest_tables"
down_revision = "0010_provider_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rest_table_versions",
        sa.Column("table_name", sa.String(63), primary_key=True),
        sa.Column("revision", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("provider_key", sa.String(100), nullable=False),
        sa.Column("schema", sa.Text(), nullable=False),
        sa.Column("operations", sa.Text(), nullable=False),
        sa.Column("source", sa.String(1000), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rest_table_versions")
