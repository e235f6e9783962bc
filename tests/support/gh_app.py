"""Definitions for the GitHub end-to-end tests (reconstructable by Dagster)."""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions, engine_of
from providers.github import GitHubProvider, upsert_github_issues
from providers.github_activity import GitHubActivityProvider, store_activities

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
