"""exact sliding-window rate budgets and server-reported remaining quota

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_budgets") as batch:
        batch.add_column(sa.Column("server_remaining", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("server_reset", sa.Float(), nullable=True))
    op.create_table(
        "rate_budget_grants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rate_budget_grants", "rate_budget_grants", ["integration_id", "granted_at"])


def downgrade() -> None:
    op.drop_index("ix_rate_budget_grants", table_name="rate_budget_grants")
    op.drop_table("rate_budget_grants")
    with op.batch_alter_table("rate_budgets") as batch:
        batch.drop_column("server_reset")
        batch.drop_column("server_remaining")
