"""Destination tables of declarative REST providers (docs/REST_PROVIDERS.md): their recorded
revisions (``rest_table_versions``, migration 0020_rest_tables), the DDL of a migration (Alembic
operations), and the set-based upsert from staged items (both dialects).

What a migration does is decided by ``declarative.schema`` (pure); this module reads what it needs
(the latest revision, the live table) and applies the decision in one transaction, serialised on
PostgreSQL by an advisory transaction lock and on SQLite by ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    desc,
    inspect,
    select,
    text,
)

from integrations_dagster.declarative.schema import (
    AddColumn,
    ColumnSchema,
    CreateTable,
    LiveTable,
    TablePlan,
    TableSchema,
    schema_of,
)
from integrations_dagster.store import models as m

if TYPE_CHECKING:
    from integrations_dagster.declarative.config import Column as ColumnConfig
    from integrations_dagster.declarative.config import Destination
    from integrations_dagster.store.store import Store

_TYPES: dict[str, Any] = {"integer": Integer, "bigint": BigInteger, "text": Text, "json": JSON,
                          "boolean": Boolean, "float": Float}
_PG_CAST = {"integer": "int", "bigint": "bigint", "text": None, "string": None, "boolean": "boolean",
            "float": "double precision"}
_LOCK_KEY = 728130020

Planner = Callable[[str, TableSchema, "tuple[int, TableSchema] | None", "LiveTable | None"], TablePlan]


def sa_column(col: ColumnSchema) -> Column[Any]:
    kind = String(col.length or 300) if col.type == "string" else _TYPES[col.type]()
    return Column(col.name, kind, primary_key=col.primary_key, nullable=col.nullable and not col.primary_key,
                  autoincrement=False)


def destination_table(dest: Destination) -> Table:
    """The SQLAlchemy table of a destination (``integration_id`` first, then the declared columns)."""
    schema = schema_of(dest)
    return Table(schema.table, MetaData(), *[sa_column(c) for c in schema.columns])


# --- recorded revisions and migrations ------------------------------------------------------------
def latest(conn: Connection, table: str) -> tuple[int, TableSchema] | None:
    """The latest recorded revision of ``table`` and its schema (None: never migrated)."""
    v = m.rest_table_versions
    row = conn.execute(select(v.c.revision, v.c.schema).where(v.c.table_name == table)
                       .order_by(desc(v.c.revision)).limit(1)).first()
    return (int(row.revision), TableSchema.from_json(row.schema)) if row is not None else None


def history(store: Store, table: str) -> list[dict[str, Any]]:
    """Every recorded revision of ``table``, oldest first."""
    v = m.rest_table_versions
    with store.engine.connect() as conn:
        rows = conn.execute(select(v.c.revision, v.c.provider_key, v.c.operations, v.c.source, v.c.applied_at)
                            .where(v.c.table_name == table).order_by(v.c.revision)).mappings().all()
    return [dict(r) for r in rows]


def live(conn: Connection, table: str) -> LiveTable | None:
    """The table as the database has it (None: no such table)."""
    insp = inspect(conn)
    if not insp.has_table(table):
        return None
    cols = insp.get_columns(table)
    pk = insp.get_pk_constraint(table).get("constrained_columns") or []
    return LiveTable(columns=frozenset(c["name"] for c in cols), primary_key=frozenset(pk),
                     nullable=frozenset(c["name"] for c in cols if c.get("nullable", True)))


def migrate_table(store: Store, *, provider_key: str, source: str | None, resource: str, wanted: TableSchema,
                  planner: Planner) -> TablePlan:
    """Plan (under the lock, from what is recorded now) and apply one table's migration; returns the
    plan. Refused or up-to-date plans change nothing."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from integrations_dagster.store.store import utcnow

    store.migrate()
    with store.begin() as conn:
        if not store.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        plan = planner(resource, wanted, latest(conn, wanted.table), live(conn, wanted.table))
        if plan.refused or not plan.records:
            return plan
        op = Operations(MigrationContext.configure(conn))
        for step in plan.steps:
            if isinstance(step, CreateTable):
                op.create_table(step.schema.table, *[sa_column(c) for c in step.schema.columns])
            elif isinstance(step, AddColumn):
                c = sa_column(step.column)
                op.add_column(wanted.table, Column(c.name, c.type, nullable=True))
        ops = [s.describe() for s in plan.steps] + [f"note: {n}" for n in plan.notes]
        conn.execute(m.rest_table_versions.insert().values(
            table_name=wanted.table, revision=plan.revision + 1, provider_key=provider_key,
            schema=wanted.to_json(), operations="\n".join(ops) or "record the configuration's schema",
            source=source, applied_at=utcnow(),
        ))
    return plan


def recorded(store: Store, table: str) -> tuple[int, TableSchema] | None:
    """``latest`` on a connection of its own (framework tables migrated first)."""
    store.migrate()
    with store.engine.connect() as conn:
        return latest(conn, table)


# --- set-based upsert from the staged items ---------------------------------------------------------
def _pg_expr(col: ColumnConfig, item: str) -> str:
    if col.path == "$":
        return f"{item}::json"
    if "[*]" in col.path:
        head, tail = col.path.split("[*]", 1)
        arr = _pg_path(item, head, as_text=False)
        jp = "$[*]" + "".join(f'."{p}"' for p in tail.lstrip(".").split("."))
        return f"COALESCE(jsonb_path_query_array({arr}, '{jp}'), '[]')::json"
    if col.type == "json":
        return f"{_pg_path(item, col.path, as_text=False)}::json"
    expr = _pg_path(item, col.path, as_text=True)
    cast = _PG_CAST[col.type]
    return f"({expr})::{cast}" if cast else expr


def _pg_path(item: str, path: str, *, as_text: bool) -> str:
    parts = path.split(".")
    out = item
    for i, p in enumerate(parts):
        op = "->>" if as_text and i == len(parts) - 1 else "->"
        out += f"{op}'{p}'"
    return out


def _sqlite_expr(col: ColumnConfig, event: str, base: str) -> str:
    if col.path == "$":
        return f"json_extract({event}, '{base}')"
    if "[*]" in col.path:
        head, tail = col.path.split("[*]", 1)
        return (f"COALESCE((SELECT json_group_array(json_extract(je.value, '$.{tail.lstrip('.')}')) "
                f"FROM json_each({event}, '{base}.{head}') AS je), '[]')")
    path = f"{base}." + ".".join(f'"{p}"' for p in col.path.split("."))
    return f"json_extract({event}, '{path}')"


def upsert_sql(dest: Destination, dialect: str, *, resource: str | None) -> str:
    """``INSERT ... SELECT`` from ``{staged}`` into the destination, keyed by its primary key.

    The latest dispatch of a key in the batch wins (PostgreSQL ``DISTINCT ON`` ordered by item id;
    SQLite applies the rows in item order). ``resource`` filters the staged rows when the provider
    has more than one resource.
    """
    names = ["integration_id", *dest.columns]
    keys = dest.key_columns
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n not in keys) or None
    conflict = f'ON CONFLICT ({", ".join(keys)}) ' + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
    quoted = ", ".join(f'"{n}"' for n in names)
    if dialect == "postgresql":
        exprs = ["(s.event->>'integration_id')::int"] + [_pg_expr(c, "s.i") for c in dest.columns.values()]
        positions = ", ".join(str(names.index(k) + 1) for k in keys)
        where = f"WHERE st.event->>'resource' = '{resource}' " if resource else ""
        return (
            f'INSERT INTO "{dest.table}" ({quoted}) SELECT DISTINCT ON ({positions}) {", ".join(exprs)} '
            f"FROM (SELECT st.item_id, st.event, st.event->'item' AS i FROM {{staged}} AS st {where}OFFSET 0) AS s "
            f"ORDER BY {positions}, s.item_id DESC {conflict}"
        )
    exprs = ["json_extract(s.event, '$.integration_id')"] + [
        _sqlite_expr(c, "s.event", "$.item") for c in dest.columns.values()
    ]
    where = f"WHERE json_extract(s.event, '$.resource') = '{resource}'" if resource else "WHERE true"
    return (
        f'INSERT INTO "{dest.table}" ({quoted}) SELECT {", ".join(exprs)} FROM {{staged}} AS s '
        f"{where} ORDER BY s.item_id {conflict}"
    )
