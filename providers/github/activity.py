"""GitHub activity (seed 001): notifications and the user's own events, two streams, one structured cursor.

The cursor is ``{"notifications": <updated_at>, "events": <created_at>}``; the provider reduces
checkpoints per stream (its own reducer), which is why a failure keeps the whole cursor where it
was (structured cursors have no low-water mark). Metadata: optional ``username`` (default: the
token's user from ``GET /user``), ``base_url``, ``since``, ``overlap_seconds`` (default 6 hours: each
run re-reads that much before the cursor, for late and same-second events, and dispatches only the
ones no earlier run delivered, by id and timestamp). Credential: ``token``, or a GitHub App
installation (``app_id``, ``private_key``, ``installation_id``: ``providers.github.app``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from integrations_dagster import (
    Integration,
    Provider,
    RateLimit,
    SyncItemEvent,
    SyncSession,
    current_sync,
    listener,
)
from integrations_dagster.http import LinkHeaderPaginator
from providers.github.common import (
    GITHUB_ACTIVITY_OAUTH2,
    GITHUB_API,
    GITHUB_HEADERS,
    GitHubActivityMetadata,
    GitHubCredentials,
    credentials_model_for,
    hours_ago,
    shift_iso,
    upsert,
)
from providers.github.tables import GITHUB_TABLES, activities

STREAMS = ("notifications", "events")
#: How far before the cursor each run re-reads (metadata ``overlap_seconds``): GitHub documents that
#: events appear 30 seconds to 6 hours after they happen, and a second can hold events not yet listed.
OVERLAP_SECONDS = 6 * 3600


def _keep(found: dict[str, Any], entry: tuple[Any, ...]) -> None:
    """One entry per id in a run (pages shift while read): the latest version of it."""
    if entry[1] not in found or entry[4] > found[entry[1]][4]:
        found[entry[1]] = entry



def _floor(cursor: str | None, start: str, overlap: float) -> str:
    """Where a stream's read starts: ``overlap`` seconds before its cursor, or at ``start`` without one."""
    return shift_iso(cursor, -overlap) if cursor else start

class ActivitySynced(SyncItemEvent):
    integration_id: int
    stream: str
    source_id: str
    text: str
    source_url: str | None = None
    occurred_at: str
    raw: dict[str, Any]


class Notification(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    reason: str
    updated_at: str
    subject: dict[str, Any]
    repository: dict[str, Any] = {}


class UserEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    created_at: str
    repo: dict[str, Any] = {}


def _html(api_url: str | None) -> str | None:
    return api_url.replace("api.github.com/repos", "github.com") if api_url else None


class GitHubActivityProvider(Provider):
    key = "github_activity"
    default_sync_interval = 15
    default_rate_limit = RateLimit.per_hour(5000)
    base_url = GITHUB_API

    def http_auth(self, integration: Integration) -> Any:
        """``credentials['token']``, or a GitHub App installation (``providers.github.app``)."""
        from providers.github.app import github_auth

        return github_auth(self, integration)

    def setup_integration(self, callback: dict[str, Any], metadata: dict[str, Any]) -> Any:
        """Account setup: the account's login (``GET /user``) becomes ``metadata['username']``."""
        from providers.github.app import setup_integration

        return setup_integration(self, callback, metadata, needs=())
    http_headers = GITHUB_HEADERS
    oauth2 = GITHUB_ACTIVITY_OAUTH2  # account setup: integrations connect github_activity --authorize-url
    owned_tables = GITHUB_TABLES
    metadata_model = GitHubActivityMetadata
    credentials_model = GitHubCredentials

    def credentials_model_for(self, credentials: Any) -> Any:
        return credentials_model_for(credentials)  # a token or a GitHub App installation

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        meta = integration.metadata
        start = meta.get("since") or hours_ago(24)
        overlap = float(meta.get("overlap_seconds", OVERLAP_SECONDS))
        cursor = {s: (session.cursor or {}).get(s) for s in STREAMS}
        # The overlap window: re-read the last ``overlap`` seconds before the cursor (late and
        # same-second events), and dispatch only what no earlier run delivered (by id + timestamp).
        floor = {s: _floor(cursor[s], start, overlap) for s in STREAMS}
        http, page = session.http, {"per_page": 100}
        found: dict[str, tuple[str, str, str, str | None, str, dict[str, Any]]] = {}
        for raw, n, err in http.iter_items("/notifications", params={**page, "all": "true", "since": floor["notifications"]},
                                           paginator=LinkHeaderPaginator(), item_model=Notification):
            if n is None:
                session.dispatch_invalid(raw, err or "invalid", checkpoint_value={"notifications": floor["notifications"]})
            elif n.updated_at >= floor["notifications"]:
                text = f"{n.reason}: {n.subject.get('title')} ({n.repository.get('full_name', '')})"
                _keep(found, ("notifications", f"notification:{n.id}", text, _html(n.subject.get("url")), n.updated_at, raw))
        user = meta.get("username") or http.get_json("/user")["login"]
        for raw, e, err in http.iter_items(f"/users/{user}/events", params=page, paginator=LinkHeaderPaginator(),
                                           item_model=UserEvent):
            if e is None:
                session.dispatch_invalid(raw, err or "invalid", checkpoint_value={"events": floor["events"]})
            elif e.created_at >= floor["events"]:
                repo = e.repo.get("name", "")
                _keep(found, ("events", f"event:{e.id}", f"{user} {e.type} on {repo}",
                              f"https://github.com/{repo}" if repo else None, e.created_at, raw))
        delivered = session.already_delivered({ext: {stream: at} for stream, ext, _t, _u, at, _r in found.values()})
        for stream, ext, text, url, at, raw in sorted(found.values(), key=lambda f: (f[0], f[4], f[1])):
            if ext not in delivered:
                self._emit(session, integration, stream, ext, text, url, at, raw)

    @staticmethod
    def _emit(session: SyncSession, integration: Integration, stream: str, source_id: str, text: str,
              url: str | None, at: str, raw: dict[str, Any]) -> None:
        session.dispatch(
            ActivitySynced(integration_id=integration.id, stream=stream, source_id=source_id, text=text,
                           source_url=url, occurred_at=at, raw=raw),
            checkpoint_value={stream: at}, external_id=source_id,
        )

    def reduce_checkpoints(self, checkpoints: list[Any]) -> Any:
        """Per-stream maximum; associative, so the engine may reduce in pages and with the old cursor."""
        merged: dict[str, str] = {}
        for cp in checkpoints:
            for stream, at in (cp or {}).items():
                if at and at > merged.get(stream, ""):
                    merged[stream] = at
        return merged or None


@listener(ActivitySynced, batch=True)
def store_activities(events: list[ActivitySynced]) -> None:
    store = current_sync().store
    assert store is not None
    upsert(store, activities, [
        {"integration_id": e.integration_id, "source_id": e.source_id, "stream": e.stream, "text": e.text,
         "source_url": e.source_url, "occurred_at": e.occurred_at, "raw": e.raw} for e in events
    ], ["integration_id", "source_id"])
