"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

from integrations_dagster import build_definitions
from integrations_app import sinks
from providers.synthetic import SyntheticProvider

PROVIDERS = [SyntheticProvider()]

defs = build_definitions(
    providers=PROVIDERS,
    listeners=[sinks.store_synthetic_item],
)
