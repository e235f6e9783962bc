"""Read-only queries a waiting CLI polls while a sync run executes elsewhere (another thread or process).

Two small statements per poll: the sync run's row, and its items counted by status (the
``ix_sync_items_run_status`` index answers it). Nothing here writes or locks: on SQLite (WAL) the
reads never wait for the run's writers, on PostgreSQL they see committed rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store


@dataclass(frozen=True)
class RunCounts:
    """One sync run as seen at one moment. ``items`` maps an item status to how many items have it."""

    sync_run_id: int
    status: str
    chunks: int
    items: dict[str, int] = field(default_factory=dict)
    items_total: int = 0

    @property
    def dispatched(self) -> int:
        return sum(self.items.values())

    @property
    def unfinished(self) -> int:
        return self.items.get("pending", 0) + self.items.get("processing", 0)

    @property
    def processed(self) -> int:
        return self.dispatched - self.unfinished

    @property
    def failed(self) -> int:
        return self.items.get("failed", 0)


def newest_run(store: Store, integration_id: int) -> tuple[int, str] | None:
    """(id, status) of the integration's newest sync run, or None."""
    r = m.sync_runs
    with store.engine.connect() as conn:
        row = conn.execute(
            select(r.c.id, r.c.status).where(r.c.integration_id == integration_id).order_by(r.c.id.desc()).limit(1)
        ).first()
    return (int(row.id), str(row.status)) if row is not None else None


def run_to_follow(store: Store, integration_id: int, *, after_id: int) -> int | None:
    """The first sync run of the integration with an id above ``after_id``, or None yet."""
    r = m.sync_runs
    with store.engine.connect() as conn:
        found = conn.execute(
            select(func.min(r.c.id)).where(r.c.integration_id == integration_id, r.c.id > after_id)
        ).scalar()
    return int(found) if found is not None else None


def run_counts(store: Store, sync_run_id: int) -> RunCounts | None:
    """The run's status and its items per status (None when the run does not exist)."""
    r, t = m.sync_runs, m.sync_items
    with store.engine.connect() as conn:
        row = conn.execute(
            select(r.c.id, r.c.status, r.c.chunks, r.c.items_total).where(r.c.id == sync_run_id)
        ).first()
        if row is None:
            return None
        counts: dict[str, Any] = dict(
            conn.execute(select(t.c.status, func.count()).where(t.c.run_id == sync_run_id).group_by(t.c.status)).all()
        )
    return RunCounts(sync_run_id=int(row.id), status=str(row.status), chunks=int(row.chunks or 0),
                     items={str(k): int(v) for k, v in counts.items()}, items_total=int(row.items_total or 0))
