"""Migrating a declarative provider's destination tables (``integrations rest migrate my_api.yaml``).

``plan_destinations`` says what a migration would do (nothing is changed); ``migrate_destinations``
applies it, one recorded revision per changed table; ``require_migrated`` is what a sync checks
before it reads or writes anything: a table that was never migrated, or whose configuration changed
since its last migration, stops the run with what changed and the command to run. The decisions are
``declarative.schema``'s; the SQL is ``store.rest_tables``'.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from integrations_dagster.declarative.schema import TablePlan, accept_plan, drift, plan_table, schema_of
from integrations_dagster.errors import IntegrationsError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from integrations_dagster.declarative.provider import RestProvider
    from integrations_dagster.store.store import Store


class RestSchemaError(IntegrationsError):
    """A destination table is not at its configuration's schema: run ``integrations rest migrate``."""


def _command(provider: RestProvider) -> str:
    return f"integrations rest migrate {provider.source}" if provider.source else "integrations rest migrate <yaml>"


def _named(plan: TablePlan, provider: RestProvider) -> TablePlan:
    """The plan with ``<yaml>`` in its advice replaced by the provider's file, when it has one."""
    if not provider.source or not plan.refused:
        return plan
    return replace(plan, refused=tuple(r.replace("<yaml>", str(provider.source)) for r in plan.refused))


def plan_destinations(store: Store, provider: RestProvider) -> list[TablePlan]:
    """What migrating ``provider``'s destination tables would do (read only)."""
    from integrations_dagster.store import rest_tables

    store.migrate()
    plans = []
    with store.engine.connect() as conn:
        for res in provider.config.resources:
            wanted = schema_of(res.destination)
            plans.append(_named(plan_table(res.name, wanted, rest_tables.latest(conn, wanted.table),
                                           rest_tables.live(conn, wanted.table)), provider))
    return plans


def migrate_destinations(store: Store, provider: RestProvider, *, accept: bool = False) -> list[TablePlan]:
    """Apply the pending migrations of ``provider``'s destination tables (idempotent: an up-to-date
    table is left alone). A table whose change cannot be applied automatically is left as it is and
    its plan says why (``status == "refused"``); ``accept=True`` records the configuration as the
    next revision of a table the operator altered by hand."""
    from integrations_dagster.store import rest_tables

    out = []
    for res in provider.config.resources:
        out.append(_named(rest_tables.migrate_table(
            store, provider_key=provider.key, source=provider.source, resource=res.name,
            wanted=schema_of(res.destination), planner=accept_plan if accept else plan_table,
        ), provider))
    provider.forget_checks()
    return out


def schema_problems(conn: Connection, provider: RestProvider) -> list[str]:
    from integrations_dagster.store import rest_tables

    problems = []
    for res in provider.config.resources:
        wanted = schema_of(res.destination)
        why = drift(wanted, rest_tables.latest(conn, wanted.table))
        if why:
            problems.append(f"{why} (resource {res.name})")
    return problems


def require_migrated(conn: Connection, provider: RestProvider) -> None:
    """Raise ``RestSchemaError`` unless every destination table is at its configuration's schema."""
    problems = schema_problems(conn, provider)
    if problems:
        raise RestSchemaError(
            f"provider {provider.key!r}: " + "; ".join(problems)
            + f". Nothing was synced: run `{_command(provider)}` (add --check to see the migration first)"
        )


def describe(plans: list[TablePlan]) -> list[str]:
    return [line for p in plans for line in p.describe()]


def summary(plans: list[TablePlan]) -> dict[str, Any]:
    from integrations_dagster.declarative.schema import as_dict

    return {"tables": [as_dict(p) for p in plans]}
