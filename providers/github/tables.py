"""The GitHub providers' destination tables, owned by the provider (not the framework's migrations).

Both GitHub providers declare ``owned_tables = GITHUB_TABLES``: the engine creates these tables in the
integrations database the first time a process runs either provider against it (and records version
``GITHUB_TABLES.version`` in ``provider_schemas``). Databases made before migration
``0010_provider_tables`` already have them (the framework's first migration used to create them):
they keep their rows and are recorded as version 1. Applications may read and write these tables.
"""

from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, String, Table, Text

from integrations_dagster import ProviderTables

metadata = MetaData()

github_issues = Table(
    "github_issues",
    metadata,
    Column("integration_id", Integer, primary_key=True),
    Column("issue_id", BigInteger, primary_key=True),
    Column("number", Integer, nullable=False),
    Column("title", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("user_login", String(200), nullable=True),
    Column("labels", JSON, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("html_url", Text, nullable=True),
    Column("raw", JSON, nullable=False),
)

activities = Table(
    "activities",
    metadata,
    Column("integration_id", Integer, primary_key=True),
    Column("source_id", String(200), primary_key=True),  # "notification:<id>" or "event:<id>"
    Column("stream", String(40), nullable=False),
    Column("text", Text, nullable=False),
    Column("source_url", Text, nullable=True),
    Column("occurred_at", String(40), nullable=False),
    Column("raw", JSON, nullable=False),
)

#: Version 1: the two tables as migration 0001 created them.
GITHUB_TABLES = ProviderTables(owner="github", metadata=metadata, version=1)

__all__ = ["GITHUB_TABLES", "activities", "github_issues", "metadata"]
