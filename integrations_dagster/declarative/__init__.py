"""Declarative REST providers: a provider written as configuration (docs/REST_PROVIDERS.md)."""

from integrations_dagster.declarative.config import RestConfig, RestConfigError, load_config, parse_config
from integrations_dagster.declarative.migrate import (
    RestSchemaError,
    migrate_destinations,
    plan_destinations,
)
from integrations_dagster.declarative.provider import RestItemSynced, RestProvider

__all__ = ["RestConfig", "RestConfigError", "RestItemSynced", "RestProvider", "RestSchemaError", "load_config",
           "migrate_destinations", "parse_config", "plan_destinations"]
