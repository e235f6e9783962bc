"""Read paths for the CLI's answers-at-once verbs, over the plain DB-API driver (no SQLAlchemy).

``integrations status`` must answer in a fraction of ``import dagster``; importing SQLAlchemy alone
costs more than that budget here. This module answers ``status`` with ``sqlite3`` (standard library) or
``psycopg`` directly, with the same query as ``store.operator.status_rows`` and the same JSON shape as
``operations.actions.status_rows``; ``integrations list`` likewise (``list_integrations``: the integration
rows as ``operations.actions.integration_dict`` shapes them), ``list-failed-items`` and ``show``. ``tests/test_cli_fast.py`` checks both
paths give identical output on SQLite and PostgreSQL. It only reads, and only a database already at the migrations' head: anything
else (a new database, a pending migration, a URL form it does not know) returns ``None`` and the caller
takes the full path, which migrates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from integrations_dagster.errors import IntegrationNotFound
from integrations_dagster.status import UNFINISHED, ItemStatus

_PG_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}


def _connect(url: str) -> tuple[Any, str] | None:
    """(DB-API connection, paramstyle marker) for a URL this module understands, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else None  # sqlite:///relative or sqlite:////absolute
        if not path or "?" in path or path == ":memory:":
            return None
        import os
        import sqlite3

        if not os.path.isfile(path):
            return None
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        return conn, "?"
    if scheme in _PG_SCHEMES:
        import psycopg

        parts = urlsplit(url)
        if parts.query:
            return None
        kwargs: dict[str, Any] = {"host": parts.hostname or "localhost", "dbname": unquote(parts.path.lstrip("/"))}
        if parts.port:
            kwargs["port"] = parts.port
        if parts.username:
            kwargs["user"] = unquote(parts.username)
        if parts.password:
            kwargs["password"] = unquote(parts.password)
        return psycopg.connect(connect_timeout=5, autocommit=True, **kwargs), "%s"
    return None


def _at_head(cur: Any) -> bool:
    from integrations_dagster.store.revisions import head_revisions

    heads = head_revisions()
    if heads is None:
        return False
    try:
        cur.execute("SELECT version_num FROM alembic_version")
        return {row[0] for row in cur.fetchall()} == set(heads)
    except Exception:
        return False


def _json(value: Any, sqlite: bool) -> Any:
    if sqlite and isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS.ffffff", written as UTC
        value = datetime.fromisoformat(value)
    moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.isoformat()


def _status_sql(mark: str, integration_id: int | None, tenant: str | None) -> tuple[str, list[Any]]:
    unfinished = ", ".join(mark for _ in UNFINISHED)
    counted_statuses = (*UNFINISHED, ItemStatus.FAILED, ItemStatus.SUPERSEDED)
    counted = ", ".join(mark for _ in counted_statuses)
    params: list[Any] = [*UNFINISHED, ItemStatus.FAILED, ItemStatus.SUPERSEDED, *counted_statuses]
    sql = (
        "SELECT i.id, i.tenant, i.provider_key, i.name, i.enabled, i.health, i.cursor, i.last_synced_at, "
        "i.next_sync_at, last_run.id, last_run.status, last_run.dagster_run_id, "
        "coalesce(item_counts.pending, 0), coalesce(item_counts.failed, 0), coalesce(item_counts.superseded, 0), "
        "coalesce(outbox_counts.pending, 0), coalesce(outbox_counts.failed, 0), coalesce(outbox_counts.conflict, 0) "
        "FROM integrations AS i "
        "LEFT OUTER JOIN (SELECT integration_id AS iid, "
        f"sum(CASE WHEN status IN ({unfinished}) THEN 1 ELSE 0 END) AS pending, "
        f"sum(CASE WHEN status = {mark} THEN 1 ELSE 0 END) AS failed, "
        f"sum(CASE WHEN status = {mark} THEN 1 ELSE 0 END) AS superseded "
        f"FROM sync_items WHERE status IN ({counted}) GROUP BY integration_id) AS item_counts "
        "ON item_counts.iid = i.id "
        "LEFT OUTER JOIN (SELECT integration_id AS iid, "
        "sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, "
        "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, "
        "sum(CASE WHEN status = 'conflict' THEN 1 ELSE 0 END) AS conflict "
        "FROM outbox_mutations WHERE status IN ('pending', 'failed', 'conflict') GROUP BY integration_id) AS outbox_counts "
        "ON outbox_counts.iid = i.id "
        "LEFT OUTER JOIN (SELECT integration_id AS iid, max(id) AS run_id FROM sync_runs GROUP BY integration_id) "
        "AS latest_run ON latest_run.iid = i.id "
        "LEFT OUTER JOIN sync_runs AS last_run ON last_run.id = latest_run.run_id"
    )
    where = []
    if integration_id is not None:
        where.append(f"i.id = {mark}")
        params.append(integration_id)
    if tenant is not None:
        where.append(f"i.tenant = {mark}")
        params.append(tenant)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY i.id", [p.value if isinstance(p, ItemStatus) else p for p in params]


def _read(url: str, make_sql: Any) -> tuple[list[Any], bool] | None:
    """(rows, is SQLite) of ``make_sql(mark) -> (sql, params)`` on a database at head; None when this
    path cannot answer (the caller takes the full path, which reports errors the way it always does)."""
    read = _read_many(url, lambda mark: [make_sql(mark)])
    return None if read is None else (read[0][0], read[1])


def _read_many(url: str, make_sqls: Any) -> tuple[list[list[Any]], bool] | None:
    """Like ``_read`` for several statements on one connection: (one row list per statement, is SQLite)."""
    try:
        opened = _connect(url)
    except Exception:
        return None
    if opened is None:
        return None
    conn, mark = opened
    try:
        cur = conn.cursor()
        if not _at_head(cur):
            return None
        out = []
        for sql, params in make_sqls(mark):
            cur.execute(sql, params)
            out.append(cur.fetchall())
        return out, mark == "?"
    except Exception:
        return None
    finally:
        conn.close()


#: ``operations.actions.integration_dict``'s keys, in its order, and the column each is read from.
_INTEGRATION_COLUMNS = (
    ("id", "id"), ("tenant", "tenant"), ("provider", "provider_key"), ("name", "name"), ("metadata", "metadata"),
    ("has_credentials", "credentials IS NOT NULL"), ("enabled", "enabled"), ("health", "health"),
    ("disabled_reason", "disabled_reason"), ("interval_minutes", "sync_interval_minutes"), ("cron", "sync_cron"),
    ("cursor", "cursor"), ("consecutive_failures", "consecutive_failures"), ("last_synced_at", "last_synced_at"),
    ("next_sync_at", "next_sync_at"), ("last_run_status", "last_run_status"), ("created_at", "created_at"),
    ("updated_at", "updated_at"),
)
_JSON_KEYS = {"metadata", "cursor"}
_TIME_KEYS = {"last_synced_at", "next_sync_at", "created_at", "updated_at"}
_BOOL_KEYS = {"has_credentials", "enabled"}


def _integrations_sql(mark: str, integration_id: int | None, tenant: str | None) -> tuple[str, list[Any]]:
    cols = ", ".join(col for _, col in _INTEGRATION_COLUMNS)
    where: list[str] = []
    params: list[Any] = []
    if integration_id is not None:
        where.append(f"id = {mark}")
        params.append(integration_id)
    if tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(tenant)
    return f"SELECT {cols} FROM integrations" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id", params


def _integration_row(r: Any, sqlite: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for (key, _), value in zip(_INTEGRATION_COLUMNS, r, strict=True):
        if key in _JSON_KEYS:
            value = _json(value, sqlite)
        elif key in _TIME_KEYS:
            value = _iso(value)
        elif key in _BOOL_KEYS:
            value = bool(value)
        row[key] = value
    row["metadata"] = row["metadata"] or {}
    return row


def list_integrations(url: str, *, tenant: str | None = None) -> list[dict[str, Any]] | None:
    """``operations.actions.list_integrations`` (``integrations list``) without SQLAlchemy or pydantic;
    None when this path cannot answer. Never reads a credential, only whether one is stored."""
    read = _read(url, lambda mark: _integrations_sql(mark, None, tenant))
    if read is None:
        return None
    rows, sqlite = read
    return [_integration_row(r, sqlite) for r in rows]


#: ``operations.actions._run_summary``'s source columns of ``sync_runs`` (counts under their column names,
#: which ``status.run_summary`` reads like the full path does).
_RUN_COLUMNS = ("id", "dagster_run_id", "status", "trigger", "started_at", "finished_at", "items_total",
                "success_count", "failed_count", "skipped_count", "superseded_count", "request_count",
                "cursor_before", "cursor_after", "error", "direction", "push_summary")


def show_integration(url: str, integration_id: int, *, tenant: str | None = None) -> dict[str, Any] | None:
    """``operations.actions.show_integration`` (``integrations show ID``) without SQLAlchemy or pydantic:
    the integration and its 5 latest runs; None when this path cannot answer."""
    from integrations_dagster.status import run_summary

    read = _read_many(url, lambda mark: [
        _integrations_sql(mark, integration_id, tenant),
        (f"SELECT {', '.join(_RUN_COLUMNS)} FROM sync_runs WHERE integration_id = {mark} ORDER BY id DESC LIMIT 5",
         [integration_id]),
    ])
    if read is None:
        return None
    (found, runs), sqlite = read
    if not found:
        raise IntegrationNotFound(integration_id)
    data = _integration_row(found[0], sqlite)
    recent = []
    for r in runs:
        run = dict(zip(_RUN_COLUMNS, r, strict=True))
        recent.append({
            "id": run["id"], "dagster_run_id": run["dagster_run_id"], "status": run["status"],
            "trigger": run["trigger"], "started_at": _iso(run["started_at"]), "finished_at": _iso(run["finished_at"]),
            **run_summary(run), "requests": run["request_count"],
            "cursor_before": _json(run["cursor_before"], sqlite), "cursor_after": _json(run["cursor_after"], sqlite),
            "error": run["error"], "direction": run["direction"], "push": _json(run["push_summary"], sqlite),
        })
    data["recent_runs"] = recent
    return data


def failed_items(
    url: str, *, integration_id: int | None = None, tenant: str | None = None
) -> tuple[list[dict[str, Any]], int] | None:
    """``integrations list-failed-items`` without SQLAlchemy or pydantic: the rows of
    ``operations.actions.list_failed_items`` and how many failed or conflicting outbox mutations the
    same filter has; None when this path cannot answer. Raises ``IntegrationNotFound`` as the full path."""

    def sql(mark: str) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if integration_id is not None:
            where.append(f"g.id = {mark}")
            params.append(integration_id)
        if tenant is not None:
            where.append(f"g.tenant = {mark}")
            params.append(tenant)
        scope = " AND ".join(where) or "1 = 1"
        # One statement: the integration (to tell "not found" from "nothing failed"), its failed items,
        # and the outbox count, as rows tagged by kind.
        return (
            f"SELECT 'integration', g.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM integrations AS g "
            f"WHERE {scope} AND {'1 = 1' if integration_id is not None else '1 = 0'} "
            "UNION ALL SELECT 'item', s.id, s.integration_id, s.run_id, s.external_id, s.checkpoint, s.attempts, "
            "s.last_error, s.skip_reason, s.finished_at FROM sync_items AS s JOIN integrations AS g "
            f"ON g.id = s.integration_id WHERE s.status = {mark} AND {scope} "
            "UNION ALL SELECT 'outbox', count(*), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
            "FROM outbox_mutations AS o JOIN integrations AS g ON g.id = o.integration_id "
            f"WHERE o.status IN ('failed', 'conflict') AND {scope}",
            [*params, ItemStatus.FAILED.value, *params, *params],
        )

    read = _read(url, sql)
    if read is None:
        return None
    rows, sqlite = read
    if integration_id is not None and not any(r[0] == "integration" for r in rows):
        raise IntegrationNotFound(integration_id)
    items = [
        {"id": r[1], "integration_id": r[2], "sync_run_id": r[3], "external_id": r[4],
         "checkpoint": _json(r[5], sqlite), "status": ItemStatus.FAILED.value, "attempts": r[6], "last_error": r[7],
         "skip_reason": r[8], "failed_at": _iso(r[9])}
        for r in rows if r[0] == "item"
    ]
    items.sort(key=lambda x: x["id"])
    mutations = sum(int(r[1]) for r in rows if r[0] == "outbox")
    return items, mutations


def status_rows(url: str, *, integration_id: int | None = None, tenant: str | None = None) -> list[dict[str, Any]] | None:
    """``operations.actions.status_rows`` without SQLAlchemy; None when this path cannot answer."""
    read = _read(url, lambda mark: _status_sql(mark, integration_id, tenant))
    if read is None:
        return None
    rows, sqlite = read
    if integration_id is not None and not rows:
        raise IntegrationNotFound(integration_id)
    return [
        {
            "id": r[0], "tenant": r[1], "provider": r[2], "name": r[3], "enabled": bool(r[4]), "health": r[5],
            "cursor": _json(r[6], sqlite), "last_synced_at": _iso(r[7]), "next_sync_at": _iso(r[8]),
            "last_run_id": r[9], "last_run_status": r[10], "last_dagster_run_id": r[11],
            "pending_items": int(r[12]), "failed_items": int(r[13]), "superseded_items": int(r[14]),
            "outbox_pending": int(r[15]), "outbox_failed": int(r[16]), "outbox_conflict": int(r[17]),
        }
        for r in rows
    ]
