"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

from integrations_app import sinks
from integrations_dagster import build_definitions
from providers.github import GitHubProvider, upsert_github_issues
from providers.github.activity import GitHubActivityProvider, store_activities
from providers.synthetic import SyntheticProvider
from providers.tether import TetherProvider, apply_tether_snapshot

PROVIDERS = [SyntheticProvider(), GitHubProvider(), GitHubActivityProvider(), TetherProvider()]

defs = build_definitions(
    providers=PROVIDERS,
    listeners=[sinks.store_synthetic_item, upsert_github_issues, store_activities, apply_tether_snapshot],
)
