"""What the two GitHub providers share: headers, time helpers, metadata checks, the upsert helper."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from sqlalchemy import Connection, Table

from integrations_dagster import Integration, IntegrationsError, OAuth2Declaration, Store

GITHUB_API = "https://api.github.com"
GITHUB_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}

#: GitHub's OAuth2 (seed 001's spec.json: authorization and token URLs, comma-separated scopes). GitHub
#: supports PKCE (S256) and takes the client id and secret as form fields. The issues provider needs
#: ``repo``; the activity provider the seed's scopes.
GITHUB_OAUTH2 = OAuth2Declaration(
    authorization_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    scopes=("repo",), scope_separator=",", pkce=True, token_auth_method="client_secret_post",
)
GITHUB_ACTIVITY_OAUTH2 = replace(GITHUB_OAUTH2, scopes=("user", "public_repo", "repo", "notifications", "read:org"))


def hours_ago(hours: float) -> str:
    """ISO-8601 UTC with a Z, the form GitHub's ``since`` takes and its timestamps use."""
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_timestamp(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 timestamp such as 2024-01-31T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must name its time zone, e.g. 2024-01-31T00:00:00Z")
    return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


Since = Annotated[str | None, AfterValidator(_iso_timestamp)]
BaseUrl = Annotated[str | None, AfterValidator(_http_url)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class GitHubCredentials(BaseModel):
    """A personal access token (or any token GitHub takes as ``Authorization: Bearer``)."""

    model_config = ConfigDict(extra="forbid")
    token: Annotated[SecretStr, AfterValidator(_not_empty)]


class GitHubOAuthCredentials(BaseModel):
    """A user's OAuth token from ``integrations connect`` (refreshed by the HTTP layer when it expires)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    access_token: Annotated[SecretStr, AfterValidator(_not_empty)]
    refresh_token: SecretStr | None = None
    expires_at: float | str | None = None
    token_type: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None


class GitHubAppCredentials(BaseModel):
    """A GitHub App installation (``providers.github.app`` mints its installation tokens)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    app_id: Name
    private_key: Annotated[SecretStr, AfterValidator(_not_empty)]
    installation_id: Name
    #: The cached installation token and its expiry (written by ``providers.github.app``).
    installation_token: SecretStr | None = None
    installation_token_expires_at: float | str | None = None


def credentials_model_for(credentials: Any) -> type[BaseModel]:
    """A token, or a GitHub App installation when any of its fields is given."""
    if isinstance(credentials, dict) and any(k in credentials for k in ("app_id", "private_key", "installation_id")):
        return GitHubAppCredentials
    if isinstance(credentials, dict) and "access_token" in credentials:
        return GitHubOAuthCredentials
    return GitHubCredentials


class GitHubIssuesMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    owner: Name
    repo: Name
    #: The account's login, recorded by ``integrations connect`` (GitHub ``/user``).
    login: str | None = None
    base_url: BaseUrl = None
    since: Since = None
    #: Issues per page (GitHub takes 1-100); smaller pages only for tests and slow APIs.
    per_page: int = Field(default=100, ge=1, le=100)


class GitHubActivityMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    username: Name | None = None
    #: The account's login, recorded by ``integrations connect`` (GitHub ``/user``).
    login: str | None = None
    base_url: BaseUrl = None
    since: Since = None
    #: How far back each run re-reads events (late arrivals); default ``activity.OVERLAP_SECONDS``.
    overlap_seconds: float | None = Field(default=None, ge=0)


def shift_iso(stamp: str, seconds: float) -> str:
    """An ISO-8601 timestamp moved by ``seconds``, in the ``...Z`` form (whole seconds, rounded down)."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at.astimezone(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def require(integration: Integration, *keys: str) -> dict[str, Any]:
    meta = integration.metadata
    missing = [k for k in keys if not meta.get(k)]
    if missing:
        raise IntegrationsError(f"{integration}: metadata is missing {', '.join(missing)}")
    return meta


def upsert(
    target: Store | Connection, table: Table, rows: list[dict[str, Any]], keys: list[str], *, version: str | None = None
) -> None:
    """Upsert ``rows`` into ``table``: ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL and SQLite).

    ``target`` is a Store (its own transaction) or a connection inside the caller's transaction.
    Rows sharing a key keep the last one: one statement cannot update a row twice. With ``version``
    (a column such as ``updated_at``, ISO-8601 text of one shape, so text order is time order) a
    stored row is never replaced by an older version, and rows sharing a key keep the newest.
    """
    if not rows:
        return
    if version is None:
        rows = list({tuple(r[k] for k in keys): r for r in rows}.values())
    else:
        newest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            key = tuple(r[k] for k in keys)
            kept = newest.get(key)
            if kept is None or not (r[version] or "") < (kept[version] or ""):
                newest[key] = r
        rows = list(newest.values())
    if isinstance(target, Store):
        with target.engine.begin() as conn:
            _upsert(conn, table, rows, keys, version)
    else:
        _upsert(target, table, rows, keys, version)


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str], version: str | None) -> None:
    if conn.dialect.name == "postgresql":
        pg_upsert(conn.connection.driver_connection, table, rows, keys, version=version)
        return
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(table)
    where = None
    if version is not None:  # never replace a newer stored version with an older one
        where = table.c[version].is_(None) | (table.c[version] <= stmt.excluded[version])
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        where=where,
    )
    conn.execute(stmt, rows)  # one executemany for the batch


def pg_upsert(pg_conn: Any, table: Table, rows: list[dict[str, Any]], keys: list[str], *,
              version: str | None = None) -> None:
    """One ``INSERT ... SELECT FROM jsonb_to_recordset(%s) ON CONFLICT DO UPDATE`` for all rows, through psycopg.

    The statement text is constant and its only parameter is one JSON document: PostgreSQL parses
    the rows, while a multi-VALUES statement with thousands of placeholders costs more to build and
    parse on the client than to run (and an executemany is a statement per row).
    """
    import json

    cols = [c.name for c in table.columns]
    types = ", ".join(f'"{c.name}" {_PG_TYPES.get(c.type.__class__.__name__, "text")}' for c in table.columns)
    quoted = ", ".join(f'"{c}"' for c in cols)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in keys)
    sql = (
        f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM jsonb_to_recordset(%s::jsonb) AS x({types}) '
        f'ON CONFLICT ({", ".join(keys)}) DO UPDATE SET {updates}'
    )
    if version is not None:  # never replace a newer stored version with an older one
        sql += f' WHERE "{table.name}"."{version}" IS NULL OR "{table.name}"."{version}" <= EXCLUDED."{version}"'

    with pg_conn.cursor() as cur:
        cur.execute(sql, (json.dumps(rows),))


_PG_TYPES = {"Integer": "integer", "BigInteger": "bigint", "String": "text", "Text": "text", "JSON": "json",
             "Boolean": "boolean", "Float": "double precision"}
