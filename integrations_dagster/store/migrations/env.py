"""Alembic environment: runs migrations on the connection handed over by the store."""

from __future__ import annotations

from alembic import context

from integrations_dagster.store.models import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # used by `alembic revision --autogenerate` during development
    from sqlalchemy import create_engine

    connectable = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with connectable.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
