"""The Dagster resource through which ops reach the state store."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from integrations_dagster.settings import SyncSettings
from integrations_dagster.store import Store


class IntegrationsResource(ConfigurableResource):
    """Where integrations, sync runs and items live.

    Leave ``database_url`` unset to use ``INTEGRATIONS_DATABASE_URL`` or, failing that, SQLite under
    ``DAGSTER_HOME``. Pass ``EnvVar("...")`` for a URL that carries a password.
    """

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the integrations database (sqlite:///... or postgresql://...). "
        "Default: INTEGRATIONS_DATABASE_URL, else SQLite under DAGSTER_HOME.",
    )

    def get_store(self) -> Store:
        return Store.for_url(self.database_url or SyncSettings().resolved_database_url())
