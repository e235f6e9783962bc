"""sync runs keep what pruning their items would lose: the counts of pruned rows and the checkpoints
a later reconcile needs (issue 9 point 8)

``pruned_counts``: item rows deleted by ``integrations prune``, by status ({"success": n, ...}).
``kept_checkpoints``: written by reconcile each time it settles a run: per gap between the run's
held (failed) checkpoints, the maximum (or the provider's reduction) of the completed checkpoints in
it. Runs settled before this migration have none: prune keeps their completed rows (unless the run
succeeded outright) until a reconcile records them.

Revision ID: 0015_run_summary
Revises: 0007_outbox (re-point to the head on main when merging)
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_run_summary"
down_revision = "0011_superseded"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("pruned_counts", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("kept_checkpoints", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("kept_checkpoints")
        batch.drop_column("pruned_counts")
