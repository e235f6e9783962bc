"""superseded items (a later version of the same external id completed) and health counted once
per run (issue 9, points 2 and 11)

- ``sync_runs.superseded_count``: the run's items a later version made moot (shown to operators);
- ``sync_runs.health_counted``: health counted the run's outcome already, so re-settling it after a
  re-execution, retry or skip does not count it again (runs settled before this migration: true);
- index ``(integration_id, external_id)`` on ``sync_items``: the latest version of an external id.

Revision ID: 0011_superseded
Revises: 0007_outbox (re-point to the head on main when merging)
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_superseded"
down_revision = "0007_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("superseded_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("health_counted", sa.Boolean(), nullable=False, server_default="0"))
    op.execute("UPDATE sync_runs SET health_counted = (finished_at IS NOT NULL)")
    op.create_index("ix_sync_items_integration_external", "sync_items", ["integration_id", "external_id"])


def downgrade() -> None:
    op.drop_index("ix_sync_items_integration_external", table_name="sync_items")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("health_counted")
        batch.drop_column("superseded_count")
