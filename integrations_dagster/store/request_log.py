"""SQL of the request log (``authoring.context.DbRequestRecorder``): ``integration_requests`` rows and
the sync run's request count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, update

from integrations_dagster.store import models as m


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One HTTP attempt as stored (``url`` and ``error`` already redacted by the client)."""

    integration_id: int
    sync_run_id: int | None
    method: str
    url: str
    status_code: int | None
    duration_ms: float
    bytes: int
    attempt: int
    error: str | None
    auth_failure: bool
    created_at: datetime


def write_requests(conn: Connection, rows: Sequence[LoggedRequest], *, sync_run_id: int | None) -> None:
    """Insert ``rows`` (one executemany) and add them to sync run ``sync_run_id``'s request count (an
    auth failure among them marks the run)."""
    if not rows:
        return
    conn.execute(insert(m.requests_log), [asdict(r) for r in rows])
    if sync_run_id is not None:
        sr = m.sync_runs
        values: dict[str, object] = {"request_count": sr.c.request_count + len(rows)}
        if any(r.auth_failure for r in rows):
            values["auth_failure"] = True
        conn.execute(update(sr).where(sr.c.id == sync_run_id).values(**values))
