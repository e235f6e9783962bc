"""SQLAlchemy table definitions for the framework's own state.

The schema is defined once here and created by Alembic (see ``migrations/``); code never calls
``metadata.create_all`` so that PostgreSQL deployments can be upgraded in place.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

#: The completed item statuses (``status.COMPLETED``) as SQL, for the partial external-id index.
_COMPLETED_SQL = "status IN ('success', 'skipped', 'superseded')"
_OPEN_SQL = "status IN ('pending', 'processing', 'failed', 'superseded')"

# Integer primary keys that are BIGINT on PostgreSQL and INTEGER (rowid alias) on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

integrations = Table(
    "integrations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(200), nullable=False, default="default", server_default="default"),
    Column("provider_key", String(100), nullable=False),
    Column("name", String(300), nullable=False),
    Column("metadata", JSON, nullable=False, default=dict),
    # Fernet token (``fernet:...``) or, for keyless demos, ``plain:`` + JSON. Never logged.
    Column("credentials", Text, nullable=True),
    Column("sync_interval_minutes", Integer, nullable=True),
    Column("sync_cron", String(200), nullable=True),
    Column("rate_limit", JSON, nullable=True),  # per-integration override of the provider's budget
    Column("cursor", JSON, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True, server_default="1"),
    Column("health", String(20), nullable=False, default="healthy", server_default="healthy"),
    Column("disabled_reason", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0, server_default="0"),
    Column("consecutive_auth_failures", Integer, nullable=False, default=0, server_default="0"),
    Column("last_synced_at", DateTime(timezone=True), nullable=True),
    Column("next_sync_at", DateTime(timezone=True), nullable=True),
    Column("last_run_status", String(20), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_integrations_due", "provider_key", "enabled", "next_sync_at"),
    Index("ix_integrations_tenant", "tenant"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("integration_id", Integer, ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False),
    Column("dagster_run_id", String(64), nullable=True),
    # enumerating -> processing -> success | partial | failed ; or skipped (single flight)
    Column("status", String(20), nullable=False),
    Column("trigger", String(40), nullable=True),
    Column("cursor_before", JSON, nullable=True),
    Column("cursor_after", JSON, nullable=True),
    Column("items_total", Integer, nullable=False, default=0, server_default="0"),
    Column("success_count", Integer, nullable=False, default=0, server_default="0"),
    Column("failed_count", Integer, nullable=False, default=0, server_default="0"),
    Column("skipped_count", Integer, nullable=False, default=0, server_default="0"),
    # Items a later version of the same external id made moot (migration 0011_superseded).
    Column("superseded_count", Integer, nullable=False, default=0, server_default="0"),
    # Whether health already counted this run's outcome: a re-settled run (re-execution, retry,
    # skip) is not counted again as one more unsuccessful run (migration 0011_superseded).
    Column("health_counted", Boolean, nullable=False, default=False, server_default="0"),
    Column("chunks", Integer, nullable=False, default=0, server_default="0"),
    Column("request_count", Integer, nullable=False, default=0, server_default="0"),
    Column("error", Text, nullable=True),
    Column("auth_failure", Boolean, nullable=False, default=False, server_default="0"),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("enumerated_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # The process executing the run outside the daemon (``execute_sync``); None otherwise. On this
    # host a pid that is gone means the run is dead (``_owner.owner_alive``). Migration 0004_runs.
    Column("owner_host", String(255), nullable=True),
    Column("owner_pid", Integer, nullable=True),
    # Issue 13 (migration 0013_outbox_cycle): "sync" (push then pull), "push" or "pull"; None for a
    # provider without push. ``push_summary``: {"pushed", "conflicts", "failed", "retried"} of its push.
    Column("direction", String(10), nullable=True),
    Column("push_summary", JSON, nullable=True),
    # What pruning the run's item rows would lose (migration 0015_run_summary): the counts of pruned
    # rows by status, and the checkpoints a later reconcile needs (engine.cursor, "kept checkpoints").
    Column("pruned_counts", JSON(none_as_null=True), nullable=True),
    Column("kept_checkpoints", JSON(none_as_null=True), nullable=True),
    Index("ix_sync_runs_integration", "integration_id", "id"),
    Index("ix_sync_runs_dagster", "dagster_run_id"),
    Index("ix_sync_runs_status", "status"),
)

sync_items = Table(
    "sync_items",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("sync_runs.id", ondelete="CASCADE"), nullable=False),
    Column("integration_id", Integer, nullable=False),
    Column("chunk", Integer, nullable=False),
    # pending, processing, success, failed, skipped, superseded
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("deferrals", Integer, nullable=False, default=0, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("external_id", String(300), nullable=True),
    Column("checkpoint", JSON, nullable=True),
    Column("event_type", String(300), nullable=False),
    Column("payload", JSON, nullable=True),
    Column("skip_reason", Text, nullable=True),
    Column("first_attempt_at", DateTime(timezone=True), nullable=True),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("failure_notified", Boolean, nullable=False, default=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_sync_items_run_chunk", "run_id", "chunk", "status"),
    # SQLite only since migration 0022_item_indexes_postgres; PostgreSQL has ix_sync_items_open instead.
    Index("ix_sync_items_run_status", "run_id", "status").ddl_if(dialect="sqlite"),
    Index("ix_sync_items_integration_status", "integration_id", "status").ddl_if(dialect="sqlite"),
    Index("ix_sync_items_status_finished", "status", "finished_at").ddl_if(dialect="sqlite"),
    # Open items per integration (status lines, failed-item lists, stuck items), PostgreSQL.
    Index("ix_sync_items_open", "integration_id", "status", postgresql_where=text(_OPEN_SQL)).ddl_if(
        dialect="postgresql"),
    # Completed versions of one external id (supersession, overlap windows; migrations 0011_superseded
    # and 0021_completed_external_index: pending rows never enter it).
    Index("ix_sync_items_completed_external", "integration_id", "external_id",
          postgresql_where=text(_COMPLETED_SQL), sqlite_where=text(_COMPLETED_SQL)),
)

requests_log = Table(
    "integration_requests",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("integration_id", Integer, nullable=False),
    Column("sync_run_id", Integer, nullable=True),
    Column("method", String(10), nullable=False),
    Column("url", Text, nullable=False),  # always redacted before it gets here
    Column("status_code", Integer, nullable=True),
    Column("duration_ms", Float, nullable=False, default=0.0),
    Column("bytes", Integer, nullable=False, default=0),
    Column("attempt", Integer, nullable=False, default=1),
    Column("error", Text, nullable=True),
    Column("auth_failure", Boolean, nullable=False, default=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_requests_integration", "integration_id", "created_at"),
    Index("ix_requests_run", "sync_run_id"),
    Index("ix_requests_created", "created_at"),
)

rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("integration_id", Integer, primary_key=True),
    Column("limit", Integer, nullable=False),
    Column("period_seconds", Float, nullable=False),
    Column("window_start", Float, nullable=False),  # epoch seconds
    Column("used", Integer, nullable=False, default=0),
    Column("blocked_until", Float, nullable=True),  # from X-RateLimit-Reset when the server says 0 left
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # What the server last said is left (X-RateLimit-Remaining) and when that count resets.
    Column("server_remaining", Integer, nullable=True),
    Column("server_reset", Float, nullable=True),
)

# One row per request the budget let through: the sliding window is exact (never more than
# ``limit`` grants in any ``period_seconds``) and rows older than one period are pruned.
rate_budget_grants = Table(
    "rate_budget_grants",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("integration_id", Integer, nullable=False),
    Column("granted_at", Float, nullable=False),  # epoch seconds
    Index("ix_rate_budget_grants", "integration_id", "granted_at"),
)

# Tables owned by providers (``authoring.tables.ProviderTables``): which owner's tables exist in this
# database, at which version of the owner's schema (migration 0010_provider_tables). The providers'
# own tables are defined, created and upgraded by the providers, never by the framework's migrations.
provider_schemas = Table(
    "provider_schemas",
    metadata,
    Column("owner", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Declarative REST destinations (migration 0020_rest_tables): every migration applied to a configured
# destination table, with the schema the configuration declared at that revision (JSON, see
# ``declarative.schema.TableSchema``) and the operations that brought the table there.
rest_table_versions = Table(
    "rest_table_versions",
    metadata,
    Column("table_name", String(63), primary_key=True),
    Column("revision", Integer, primary_key=True, autoincrement=False),
    Column("provider_key", String(100), nullable=False),
    Column("schema", Text, nullable=False),
    Column("operations", Text, nullable=False),
    Column("source", String(1000), nullable=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Transactional outbox (issue 13, migration 0007_outbox): local mutations an app recorded in its own
# transaction, pushed to the provider in id order. status: pending -> synced | failed | conflict;
# a rejection with reason ``error`` goes back to pending while attempts < max_retry_attempts.
outbox = Table(
    "outbox_mutations",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("integration_id", Integer, ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False),
    Column("mutation_id", String(64), nullable=False, unique=True),  # sent to the server for de-dup
    Column("entity", String(200), nullable=False),
    Column("entity_key", String(300), nullable=False),
    Column("operation", String(20), nullable=False),  # create | update | delete
    Column("payload", JSON, nullable=True),
    Column("status", String(20), nullable=False, default="pending", server_default="pending"),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("reason", String(100), nullable=True),
    Column("details", JSON, nullable=True),
    Column("server_state", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # Migration 0013_outbox_cycle: the sync run whose push decided it last; for a conflict, the run
    # that dispatched the server's state as a tracked item (None: not delivered yet, e.g. that
    # run's enumeration failed after the push: the next run dispatches it).
    Column("sync_run_id", Integer, nullable=True),
    Column("delivered_run_id", Integer, nullable=True),
    Column("skip_reason", Text, nullable=True),  # why an operator skipped it
    Index("ix_outbox_integration_status", "integration_id", "status", "id"),
    Index("ix_outbox_key", "integration_id", "entity", "entity_key", "id"),
    Index("ix_outbox_undelivered", "integration_id", "status", "delivered_run_id"),
)
