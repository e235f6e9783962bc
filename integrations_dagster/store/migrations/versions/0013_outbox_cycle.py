"""push/pull cycle (issue 13): a run's direction and push counts; the run that pushed a mutation and
the run that delivered a conflict's server state as a tracked item

Revision ID: 0013_outbox_cycle
Revises: 0015_run_summary (assigned after 0007_outbox; re-chained onto main's head at merge)
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_outbox_cycle"
down_revision = "0015_run_summary"  # assigned: after 0007_outbox; re-chained onto main's head
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as b:
        b.add_column(sa.Column("direction", sa.String(10), nullable=True))
        b.add_column(sa.Column("push_summary", sa.JSON(), nullable=True))
    with op.batch_alter_table("outbox_mutations") as b:
        b.add_column(sa.Column("sync_run_id", sa.Integer(), nullable=True))
        b.add_column(sa.Column("delivered_run_id", sa.Integer(), nullable=True))
        b.add_column(sa.Column("skip_reason", sa.Text(), nullable=True))
    op.create_index("ix_outbox_undelivered", "outbox_mutations", ["integration_id", "status", "delivered_run_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_undelivered", table_name="outbox_mutations")
    with op.batch_alter_table("outbox_mutations") as b:
        b.drop_column("skip_reason")
        b.drop_column("delivered_run_id")
        b.drop_column("sync_run_id")
    with op.batch_alter_table("sync_runs") as b:
        b.drop_column("push_summary")
        b.drop_column("direction")
