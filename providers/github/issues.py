"""GitHub issues, incrementally: ``GET /repos/{owner}/{repo}/issues?since=<cursor>``, keyset paging on ``since``.

Metadata: ``owner``, ``repo``, optional ``base_url`` (GitHub Enterprise, the fake API) and
``since`` (first-run start; default 24 hours back), ``per_page`` (1-100, default 100). Credential: ``token``, or a
GitHub App installation (``app_id``, ``private_key``, ``installation_id``: ``providers.github.app``). Checkpoint: the issue's
``updated_at``; external id: its ``id``. An issue that does not validate is recorded as a failed
item with its raw payload (``dispatch_invalid``): the run goes red, the cursor holds before it, and
an operator sees it in ``list-failed-items`` and can skip it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import TypedDict

from integrations_dagster import (
    Integration,
    Provider,
    RateLimit,
    StagedBatch,
    SyncItemEvent,
    SyncSession,
    listener,
)
from integrations_dagster.http import SinceKeysetPaginator
from providers.github.common import (
    GITHUB_API,
    GITHUB_HEADERS,
    GITHUB_OAUTH2,
    GitHubCredentials,
    GitHubIssuesMetadata,
    credentials_model_for,
    hours_ago,
    require,
    upsert,
)
from providers.github.tables import GITHUB_TABLES, github_issues


class GitHubUser(TypedDict):  # TypedDicts, not models: validated as strictly, at a fifth of the cost per issue
    login: str


class GitHubLabel(TypedDict):
    name: str


class GitHubIssue(BaseModel):
    """The fields we rely on, checked before an issue is dispatched. Everything else GitHub sends is
    ignored here (not copied into the model): the event carries the issue as sent, for ``raw``."""

    id: int
    number: int
    title: str
    state: str
    user: GitHubUser | None = None
    labels: list[GitHubLabel] = []
    created_at: str
    updated_at: str
    html_url: str | None = None


class GitHubIssueSynced(SyncItemEvent):
    """Carries the issue as GitHub sent it: validated once against ``GitHubIssue`` at enumeration, so the
    listener reads plain dict fields instead of paying for a second model validation per item."""

    integration_id: int
    issue: dict[str, Any]


def _raw_id(raw: Any) -> str | int | None:
    """The id of an item that did not validate, when it has a usable one (an item may not even be an object)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


class GitHubProvider(Provider):
    key = "github"
    default_sync_interval = 5
    default_rate_limit = RateLimit.per_hour(5000)
    base_url = GITHUB_API

    def http_auth(self, integration: Integration) -> Any:
        """``credentials['token']``, or a GitHub App installation (``providers.github.app``)."""
        from providers.github.app import github_auth

        return github_auth(self, integration)

    def setup_integration(self, callback: dict[str, Any], metadata: dict[str, Any]) -> Any:
        """Account setup: an OAuth callback (or ``{"installation_id": ...}`` with app credentials)
        becomes an integration named after the account (``GET /user``) and ``owner/repo``."""
        from providers.github.app import setup_integration

        return setup_integration(self, callback, metadata, needs=("owner", "repo"))
    http_headers = GITHUB_HEADERS
    oauth2 = GITHUB_OAUTH2  # account setup: integrations connect github --authorize-url
    chunk_size = 10000  # one batch upsert per chunk: few, large steps
    owned_tables = GITHUB_TABLES  # github_issues, activities: created by the engine, not the framework migrations
    metadata_model = GitHubIssuesMetadata
    credentials_model = GitHubCredentials

    def credentials_model_for(self, credentials: Any) -> Any:
        return credentials_model_for(credentials)  # a token or a GitHub App installation

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        meta = require(integration, "owner", "repo")
        since = checkpoint = session.cursor or meta.get("since") or hours_ago(24)
        # Keyset paging (since = the last updated_at seen), not page numbers: an issue edited while
        # the run pages moves to the end, and page numbers would skip the issue that slides onto a
        # page already read (issue 9 point 3; SinceKeysetPaginator, docs/RELIABILITY.md).
        params = {"since": since, "state": "all", "sort": "updated", "direction": "asc"}
        for raw, issue, error in session.http.iter_items(
            f"/repos/{meta['owner']}/{meta['repo']}/issues", params=params,
            paginator=SinceKeysetPaginator(key="updated_at", id_key="id", per_page=int(meta.get("per_page") or 100)),
            item_model=GitHubIssue,
        ):
            if issue is None:
                session.dispatch_invalid(raw, error or "invalid", checkpoint_value=checkpoint, external_id=_raw_id(raw))
                continue
            checkpoint = issue.updated_at
            session.dispatch(GitHubIssueSynced(integration_id=integration.id, issue=raw),
                             checkpoint_value=issue.updated_at, external_id=issue.id)


def issue_row(event: GitHubIssueSynced) -> dict[str, Any]:
    issue = event.issue
    return {
        "integration_id": event.integration_id,
        "issue_id": issue["id"],
        "number": issue["number"],
        "title": issue["title"],
        "state": issue["state"],
        "user_login": (issue.get("user") or {}).get("login"),
        "labels": [label["name"] for label in issue.get("labels") or ()],
        "created_at": issue["created_at"],
        "updated_at": issue["updated_at"],
        "html_url": issue.get("html_url"),
        "raw": issue,
    }


@listener(GitHubIssueSynced, staged=True)
def upsert_github_issues(batch: StagedBatch) -> None:
    """Upsert a batch of issues into ``github_issues`` keyed by (integration id, issue id): idempotent.

    A stored issue is never replaced by an older version (a smaller ``updated_at``: GitHub writes it
    as ``YYYY-MM-DDTHH:MM:SSZ``, so text order is time order), whatever order versions arrive in (a
    retry of an old failed item, a re-execution, two chunks). On PostgreSQL one ``INSERT ... SELECT``
    straight from the staged events (the payloads never come back through Python); elsewhere the
    same rows built in Python (``issue_row``).
    """
    if batch.dialect == "postgresql":
        batch.execute(_PG_UPSERT_FROM_STAGED)
    else:
        upsert(batch.connection, github_issues, [issue_row(e) for e in batch.events()], ["integration_id", "issue_id"],
               version="updated_at")


# Same columns as issue_row. DISTINCT ON keeps the newest version (then the latest dispatch) of an
# issue that changed while the run paged (one statement cannot update a row twice); the WHERE of
# the update never replaces a newer stored version; OFFSET 0 makes PostgreSQL parse each staged
# payload once instead of once per column.
_PG_UPSERT_FROM_STAGED = """
INSERT INTO github_issues (integration_id, issue_id, number, title, state, user_login, labels,
                           created_at, updated_at, html_url, raw)
SELECT DISTINCT ON (1, 2)
       (s.event->>'integration_id')::int, (s.i->>'id')::bigint, (s.i->>'number')::int, s.i->>'title',
       s.i->>'state', s.i->'user'->>'login',
       COALESCE(jsonb_path_query_array(s.i->'labels', '$[*].name'), '[]')::json,
       s.i->>'created_at', s.i->>'updated_at', s.i->>'html_url', s.i::json
FROM (SELECT st.item_id, st.event, st.event->'issue' AS i FROM {staged} AS st OFFSET 0) AS s
ORDER BY 1, 2, s.i->>'updated_at' DESC, s.item_id DESC
ON CONFLICT (integration_id, issue_id) DO UPDATE SET
    number = EXCLUDED.number, title = EXCLUDED.title, state = EXCLUDED.state,
    user_login = EXCLUDED.user_login, labels = EXCLUDED.labels, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, html_url = EXCLUDED.html_url, raw = EXCLUDED.raw
WHERE github_issues.updated_at <= EXCLUDED.updated_at
"""
