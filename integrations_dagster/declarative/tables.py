"""Destination tables of declarative providers: the SQLAlchemy table, its creation as an Alembic
operation, and the set-based upsert from staged items (both dialects)."""

from __future__ import annotations

import threading
import zlib
from typing import Any

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
    inspect,
    text,
)

from integrations_dagster.declarative.config import Column as ColumnConfig
from integrations_dagster.declarative.config import Destination

_TYPES: dict[str, Any] = {"integer": Integer, "bigint": BigInteger, "text": Text, "json": JSON,
                          "boolean": Boolean, "float": Float}
_PG_CAST = {"integer": "int", "bigint": "bigint", "text": None, "string": None, "boolean": "boolean",
            "float": "double precision"}
_metadata = MetaData()
_ensured: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _sa_type(col: ColumnConfig) -> Any:
    if col.type == "string":
        return String(col.length or 300)
    return _TYPES[col.type]()


def destination_table(dest: Destination) -> Table:
    """The SQLAlchemy table of a destination (``integration_id`` first, then the declared columns)."""
    existing = _metadata.tables.get(dest.table)
    if existing is not None:
        return existing
    keys = set(dest.key_columns)
    cols = [Column("integration_id", Integer, primary_key=True)]
    for name, col in dest.columns.items():
        cols.append(Column(name, _sa_type(col), primary_key=name in keys, nullable=col.nullable and name not in keys))
    return Table(dest.table, _metadata, *cols)


def ensure_destination(conn: Connection, dest: Destination) -> None:
    """Create the destination table, or add the columns a newer configuration declares, with Alembic
    operations on ``conn`` (idempotent; serialised by an advisory lock on PostgreSQL). A column
    removed from the configuration is left in place (dropping data is an operator's decision)."""
    key = (str(conn.engine.url), dest.table)
    if key in _ensured:
        return
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    with _lock:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(-12, :h)"), {"h": zlib.crc32(dest.table.encode()) & 0x7FFFFFFF})
        table = destination_table(dest)
        insp = inspect(conn)
        op = Operations(MigrationContext.configure(conn))
        if not insp.has_table(dest.table):
            op.create_table(dest.table, *[c.copy() for c in table.columns])
        else:
            present = {c["name"] for c in insp.get_columns(dest.table)}
            for c in table.columns:
                if c.name not in present:
                    op.add_column(dest.table, Column(c.name, c.type, nullable=True))
        _ensured.add(key)


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
