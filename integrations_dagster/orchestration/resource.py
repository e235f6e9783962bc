"""The Dagster resource through which ops reach the state store."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from integrations_dagster.settings import SyncSettings
from integrations_dagster.store import Store

ENV_DATABASE_URL = "INTEGRATIONS_DATABASE_URL"


class IntegrationsResource(ConfigurableResource["IntegrationsResource"]):
    """Where integrations, sync runs and items live.

    Leave ``database_url`` unset to use ``INTEGRATIONS_DATABASE_URL`` or, failing that, SQLite under
    ``DAGSTER_HOME``. Pass ``EnvVar("...")`` for a URL that carries a password: a literal value is part
    of the repository snapshot and of every run's job snapshot in Dagster's storage.
    """

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the integrations database (sqlite:///... or postgresql://...). "
        "Default: INTEGRATIONS_DATABASE_URL, else SQLite under DAGSTER_HOME.",
    )

    def get_store(self) -> Store:
        return Store.for_url(self.database_url or SyncSettings().resolved_database_url())

    def setup_for_execution(self, context: Any) -> None:
        """Once per run (and per step process): the run's Dagster instance keeps its database connections
        open instead of one connection per event write (``orchestration.batch.pool_dagster_connections``;
        on PostgreSQL storage 10 ms instead of 43 ms per event, measured in docs/BENCHMARKS.md)."""
        from integrations_dagster.orchestration.batch import pool_dagster_connections

        pool_dagster_connections(getattr(context, "instance", None))


def has_secret(url: str) -> bool:
    """Whether a database URL carries a password (in its userinfo or as a ``password`` query parameter)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # unparseable: treat it as secret, never bake it in
        return True
    return bool(parsed.password) or any(k.lower() in {"password", "passwd", "sslpassword"} for k in parsed.query)


def database_url_config(url: str | None) -> Any:
    """The value ``build_definitions`` gives the resource's ``database_url``: never a literal password.

    - None: resolved when a run opens the store (``INTEGRATIONS_DATABASE_URL``, else SQLite);
    - the value of ``INTEGRATIONS_DATABASE_URL``: ``EnvVar("INTEGRATIONS_DATABASE_URL")``;
    - a URL set in code that carries a password: exported under ``INTEGRATIONS_DATABASE_URL_<hash>``
      in this process (every process that loads the definitions runs this again, run workers included)
      and passed as that ``EnvVar``; Dagster stores the variable's name, not its value;
    - any other URL (SQLite, PostgreSQL without a password): as given.
    """
    if url is None:
        return None
    if os.environ.get(ENV_DATABASE_URL) == url:
        return EnvVar(ENV_DATABASE_URL)
    if not has_secret(url):
        return url
    name = f"{ENV_DATABASE_URL}_{hashlib.sha256(url.encode()).hexdigest()[:12].upper()}"
    os.environ[name] = url
    return EnvVar(name)
