"""Declarative REST providers: a provider written as configuration (docs/REST_PROVIDERS.md)."""

from integrations_dagster.declarative.config import RestConfig, RestConfigError, load_config, parse_config
from integrations_dagster.declarative.provider import RestItemSynced, RestProvider, register_auth, upsert_rest_items

__all__ = ["RestConfig", "RestConfigError", "RestItemSynced", "RestProvider", "load_config", "parse_config",
           "register_auth", "upsert_rest_items"]
