"""Definitions with the coded GitHub provider, its declarative twin and the contacts example."""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions
from integrations_dagster.declarative import RestProvider
from providers.contacts import contacts_provider
from providers.github import GitHubProvider, upsert_github_issues
from providers.github.rest import github_issues_rest


def rest_providers() -> list[RestProvider]:
    return [github_issues_rest(), contacts_provider()]


def make_defs(database_url: str, settings: dict[str, Any] | None = None) -> Definitions:
    base = dict(item_backoff=[0.0], item_tries=2, database_url=database_url)
    base.update(settings or {})
    rest = rest_providers()
    return build_definitions(
        providers=[GitHubProvider(), *rest],
        listeners=[upsert_github_issues, *(p.listener for p in rest)],
        settings=SyncSettings(**base), sensors=False, operator_jobs=False,
    )
