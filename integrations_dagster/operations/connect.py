"""Account setup (seed 001's SETUP event): a provider turns an OAuth callback into a new integration.

``connect(store, engine=..., provider_key=..., callback=...)`` asks the provider's
``setup_integration(callback, metadata)`` for an ``IntegrationSetup`` (it looks up the account's
identity with the new credentials, names the integration, says which credentials to keep), then
creates the integration like ``integrations add`` (tenant, cron or interval; credentials encrypted).
Nothing is stored when the provider refuses (bad token, identity lookup failed).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from integrations_dagster.errors import IntegrationsError


class IntegrationSetup(BaseModel):
    """What a provider's ``setup_integration`` returns."""

    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict, repr=False)


def connect(
    store: Any,
    *,
    engine: Any,
    provider_key: str,
    callback: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
    interval_minutes: int | None = None,
    cron: str | None = None,
    tenant: str | None = None,
) -> Any:
    """Create an integration of ``provider_key`` from an OAuth callback response; returns it."""
    from integrations_dagster.operations.actions import add_integration

    provider = engine.provider(provider_key)
    setup = getattr(provider, "setup_integration", None)
    if not callable(setup):
        raise IntegrationsError(
            f"provider {provider_key!r} does not support account setup (no setup_integration); "
            "use `integrations add` with its credentials instead"
        )
    if interval_minutes is not None and cron is not None:
        raise IntegrationsError("give either an interval or a cron expression, not both")
    result = setup(dict(callback), dict(metadata or {}))
    if not isinstance(result, IntegrationSetup):
        result = IntegrationSetup.model_validate(result)
    return add_integration(
        store, engine=engine, provider_key=provider_key, name=name or result.name, metadata=result.metadata,
        credentials=result.credentials, interval_minutes=interval_minutes, cron=cron, tenant=tenant,
    )
