"""sync runs record the process executing them outside the daemon (host and pid), so a killed one
is recognised as dead (see integrations_dagster/_owner.py)

Revision ID: 0004_runs
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_runs"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("owner_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("owner_pid")
        batch.drop_column("owner_host")
