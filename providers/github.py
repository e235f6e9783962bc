"""GitHub issues, incrementally: ``GET /repos/{owner}/{repo}/issues?since=<cursor>``, Link-header paging.

Metadata: ``owner``, ``repo``, optional ``base_url`` (GitHub Enterprise, the fake API) and
``since`` (first-run start; default 24 hours back). Credential: ``token``. Checkpoint: the issue's
``updated_at``; external id: its ``id``. An issue that does not validate is recorded as a failed
item with its raw payload (``dispatch_invalid``): the run goes red, the cursor holds before it, and
an operator sees it in ``list-failed-items`` and can skip it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from integrations_dagster import (
    Integration, Provider, RateLimit, SyncItemEvent, SyncSession, current_sync, listener,
)
from integrations_dagster.tables import github_issues
from integrations_dagster.http import LinkHeaderPaginator

from ._github_common import GITHUB_API, GITHUB_HEADERS, hours_ago, require, upsert


class GitHubUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    login: str


class GitHubLabel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class GitHubIssue(BaseModel):
    """The fields we rely on; everything else GitHub sends is kept (``extra="allow"``) for ``raw``."""

    model_config = ConfigDict(extra="allow")
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


class GitHubProvider(Provider):
    key = "github"
    default_sync_interval = 5
    default_rate_limit = RateLimit.per_hour(5000)
    base_url = GITHUB_API
    http_headers = GITHUB_HEADERS
    chunk_size = 5000  # one batch upsert per chunk: few, large steps

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        meta = require(integration, "owner", "repo")
        since = checkpoint = session.cursor or meta.get("since") or hours_ago(24)
        params = {"since": since, "state": "all", "sort": "updated", "direction": "asc", "per_page": 100}
        for raw, issue, error in session.http.iter_items(
            f"/repos/{meta['owner']}/{meta['repo']}/issues", params=params,
            paginator=LinkHeaderPaginator(), item_model=GitHubIssue,
        ):
            if issue is None:
                session.dispatch_invalid(raw, error or "invalid", checkpoint_value=checkpoint, external_id=raw.get("id"))
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


@listener(GitHubIssueSynced, batch=True)
def upsert_github_issues(events: list[GitHubIssueSynced]) -> None:
    """Upsert a batch of issues into ``github_issues`` keyed by (integration id, issue id): idempotent."""
    store = current_sync().store
    assert store is not None
    upsert(store, github_issues, [issue_row(e) for e in events], ["integration_id", "issue_id"])
