"""index sync items by (run, status): the unfinished check and the counts of reconciliation

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sync_items_run_status", "sync_items", ["run_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_sync_items_run_status", table_name="sync_items")
