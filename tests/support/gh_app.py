"""Definitions for the GitHub end-to-end tests (reconstructable by Dagster)."""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions
from integrations_dagster.orchestration.code_location import engine_of
from providers.github import GitHubProvider, upsert_github_issues
from providers.github.activity import GitHubActivityProvider, store_activities

HTTP_OPTIONS: dict[str, Any] = {}


def make_defs(database_url: str, settings: dict[str, Any] | None = None) -> Definitions:
    base = dict(item_backoff=[0.0], item_tries=2, database_url=database_url)
    base.update(settings or {})
    defs = build_definitions(
        providers=[GitHubProvider(), GitHubActivityProvider()],
        listeners=[upsert_github_issues, store_activities],
        settings=SyncSettings(**base),
        sensors=False,
        operator_jobs=False,
    )
    engine_of(defs).http_options = HTTP_OPTIONS
    return defs


# --- a listener that calls the API per item (for the budget-deferral test) --------------------
from integrations_dagster import Integration, Provider, RateLimit, SyncItemEvent, SyncSession, current_sync  # noqa: E402

DETAIL_CALLS: list[int] = []


class IssueNumber(SyncItemEvent):
    number: int


class DetailProvider(Provider):
    """Dispatches issue numbers; its listener fetches each issue's detail through ``current_sync().http``."""

    key = "github_detail"
    default_rate_limit = RateLimit(2, 1.0)  # two requests per second, shared by enumeration and items

    def sync(self, integration: Integration, session: SyncSession) -> None:
        for n in integration.metadata["numbers"]:
            session.dispatch(IssueNumber(number=n), checkpoint_value=n, external_id=n)


def fetch_detail(event: IssueNumber) -> None:
    detail = current_sync().http.get_json(f"/repos/acme/widgets/issues/{event.number}")
    DETAIL_CALLS.append(detail["number"])


def make_detail_defs(database_url: str) -> Definitions:
    defs = build_definitions(
        providers=[DetailProvider()], listeners=[(IssueNumber, fetch_detail)],
        settings=SyncSettings(database_url=database_url, item_backoff=[0.0], item_tries=2, inline_wait_max=0.2),
        sensors=False, operator_jobs=False,
    )
    return defs


def make_defs_default() -> Definitions:
    """``make_defs`` for the database in ``INTEGRATIONS_DATABASE_URL`` (the CLI's ``--defs``)."""
    import os

    return make_defs(os.environ["INTEGRATIONS_DATABASE_URL"])
