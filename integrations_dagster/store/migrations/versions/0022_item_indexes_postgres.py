"""PostgreSQL: two fewer indexes on sync_items, and the per-integration status index on open items only

Every row a big sync records (``COPY``) fed six btrees. Measured on PostgreSQL 15 (100,000 GitHub
issues, docs/BENCHMARKS.md): the five secondary indexes were 45% of the ``COPY``'s cost. Of them:

- ``ix_sync_items_run_status`` (run_id, status) repeats the prefix of ``ix_sync_items_run_chunk``
  (run_id, chunk, status), which answers the same ``run_id = ? AND status ...`` lookups (the status
  is checked inside the index entries of the run);
- ``ix_sync_items_status_finished`` (status, finished_at) served no query: pruning filters on
  ``coalesce(finished_at, created_at)``, which this index cannot answer, and everything else that
  filters on a status names a run or an integration too;
- ``ix_sync_items_integration_status`` (integration_id, status) is read for open items only (failed,
  pending, processing, superseded: status lines, failed-item lists, stuck-item recovery); as a partial
  index on those statuses, ``ix_sync_items_open``, the succeeded rows that are nearly all of a big sync
  never enter it. Completed items of an integration are found through ``ix_sync_items_completed_external``.

SQLite keeps its indexes: its planner uses a partial index only when a query repeats the index's
condition word for word, and its writes are not the bottleneck there.

Revision ID: 0022_item_indexes_postgres
Revises: 0021_completed_external_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0022_item_indexes_postgres"
down_revision = "0021_completed_external_index"
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'processing', 'failed', 'superseded')"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_sync_items_run_status", table_name="sync_items")
    op.drop_index("ix_sync_items_status_finished", table_name="sync_items")
    op.drop_index("ix_sync_items_integration_status", table_name="sync_items")
    op.create_index("ix_sync_items_open", "sync_items", ["integration_id", "status"], postgresql_where=sa.text(OPEN))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_sync_items_open", table_name="sync_items")
    op.create_index("ix_sync_items_integration_status", "sync_items", ["integration_id", "status"])
    op.create_index("ix_sync_items_status_finished", "sync_items", ["status", "finished_at"])
    op.create_index("ix_sync_items_run_status", "sync_items", ["run_id", "status"])
