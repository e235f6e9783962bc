"""GitHub activity (seed 001): notifications and the user's own events, two streams, one structured cursor.

The cursor is ``{"notifications": <updated_at>, "events": <created_at>}``; the provider reduces
checkpoints per stream (its own reducer), which is why a failure keeps the whole cursor where it
was (structured cursors have no low-water mark). Metadata: optional ``username`` (default: the
token's user from ``GET /user``), ``base_url``, ``since``. Credential: ``token``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from integrations_dagster import (
    Integration, Provider, RateLimit, SyncItemEvent, SyncSession, current_sync, listener,
)
from providers.github.tables import GITHUB_TABLES, activities
from integrations_dagster.http import LinkHeaderPaginator

from providers.github.common import GITHUB_API, GITHUB_HEADERS, hours_ago, upsert

STREAMS = ("notifications", "events")


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
    http_headers = GITHUB_HEADERS
    tables = GITHUB_TABLES

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        start = integration.metadata.get("since") or hours_ago(24)
        cursor = {s: (session.cursor or {}).get(s) or start for s in STREAMS}
        http, page = session.http, {"per_page": 100}
        for raw, n, err in http.iter_items("/notifications", params={**page, "all": "true", "since": cursor["notifications"]},
                                           paginator=LinkHeaderPaginator(), item_model=Notification):
            if n is None:
                session.dispatch_invalid(raw, err or "invalid", checkpoint_value={"notifications": cursor["notifications"]})
            elif n.updated_at > cursor["notifications"]:
                text = f"{n.reason}: {n.subject.get('title')} ({n.repository.get('full_name', '')})"
                self._emit(session, integration, "notifications", f"notification:{n.id}", text,
                           _html(n.subject.get("url")), n.updated_at, raw)
        user = integration.metadata.get("username") or http.get_json("/user")["login"]
        for raw, e, err in http.iter_items(f"/users/{user}/events", params=page, paginator=LinkHeaderPaginator(),
                                           item_model=UserEvent):
            if e is None:
                session.dispatch_invalid(raw, err or "invalid", checkpoint_value={"events": cursor["events"]})
            elif e.created_at > cursor["events"]:
                repo = e.repo.get("name", "")
                self._emit(session, integration, "events", f"event:{e.id}", f"{user} {e.type} on {repo}",
                           f"https://github.com/{repo}" if repo else None, e.created_at, raw)

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
