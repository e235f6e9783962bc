"""What the two GitHub providers share: headers, time helpers, metadata checks, the upsert helper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table

from integrations_dagster import Integration, IntegrationsError, Store

GITHUB_API = "https://api.github.com"
GITHUB_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def hours_ago(hours: float) -> str:
    """ISO-8601 UTC with a Z, the form GitHub's ``since`` takes and its timestamps use."""
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def require(integration: Integration, *keys: str) -> dict[str, Any]:
    meta = integration.metadata
    missing = [k for k in keys if not meta.get(k)]
    if missing:
        raise IntegrationsError(f"{integration}: metadata is missing {', '.join(missing)}")
    return meta


def upsert(store: Store, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """One ``INSERT ... ON CONFLICT DO UPDATE`` for all rows (PostgreSQL and SQLite)."""
    if not rows:
        return
    if store.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, rows)
