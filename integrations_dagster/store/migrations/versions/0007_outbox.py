"""transactional outbox for local mutations pushed to the provider (issue 13)

Revision ID: 0007_outbox
Revises: 0004_runs (re-point to the head on main when merging)
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_outbox"
down_revision = "0004_runs"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox_mutations",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("integration_id", sa.Integer(), sa.ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("mutation_id", sa.String(64), nullable=False, unique=True),
        sa.Column("entity", sa.String(200), nullable=False),
        sa.Column("entity_key", sa.String(300), nullable=False),
        sa.Column("operation", sa.String(20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reason", sa.String(100), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("server_state", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_integration_status", "outbox_mutations", ["integration_id", "status", "id"])
    op.create_index("ix_outbox_key", "outbox_mutations", ["integration_id", "entity", "entity_key", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_key", table_name="outbox_mutations")
    op.drop_index("ix_outbox_integration_status", table_name="outbox_mutations")
    op.drop_table("outbox_mutations")
