"""Destination schemas and their migrations, as pure decisions over typed records.

A declarative provider's destination table is created and changed only by a migration the operator
runs (``integrations rest migrate my_api.yaml``, or ``migrate_destinations`` in Python). Each
applied migration is a numbered revision of that table, recorded in ``rest_table_versions``
(framework migration ``0020_rest_tables``) with the schema the configuration declared at that
revision. This module decides, without touching a database:

- ``schema_of(destination)``: the ``TableSchema`` a configuration declares;
- ``plan_table(...)``: what migrating a table from its recorded revision (and the live table) to
  the configuration takes: create it, add the new columns, keep the columns the configuration no
  longer names; or why it must not be done automatically (a type, key or nullability change, a
  new NOT NULL column): ``refused``, with what to do;
- ``drift(wanted, recorded)``: why a sync must not write into a table whose configuration changed
  since its last migration (None: it may).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from integrations_dagster.declarative.config import Destination


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str  # integer, bigint, text, string, json, boolean, float (config.ColumnType)
    length: int | None = None
    nullable: bool = True
    primary_key: bool = False

    def describe(self) -> str:
        kind = f"{self.type}({self.length})" if self.length else self.type
        flags = " primary key" if self.primary_key else ("" if self.nullable else " not null")
        return f"{self.name} {kind}{flags}"


@dataclass(frozen=True)
class TableSchema:
    table: str
    columns: tuple[ColumnSchema, ...]

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]

    def to_json(self) -> str:
        return json.dumps({"table": self.table, "columns": [
            {"name": c.name, "type": c.type, "length": c.length, "nullable": c.nullable, "primary_key": c.primary_key}
            for c in self.columns
        ]}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> TableSchema:
        data = json.loads(raw)
        return cls(table=str(data["table"]), columns=tuple(
            ColumnSchema(name=str(c["name"]), type=str(c["type"]), length=c.get("length"),
                         nullable=bool(c.get("nullable", True)), primary_key=bool(c.get("primary_key", False)))
            for c in data["columns"]
        ))

    def same_as(self, other: TableSchema) -> bool:
        """Equal up to column order."""
        return self.table == other.table and set(self.columns) == set(other.columns)


def schema_of(dest: Destination) -> TableSchema:
    """Pure: the table a destination declares (``integration_id`` first, always in the key)."""
    keys = set(dest.key_columns)
    cols = [ColumnSchema("integration_id", "integer", None, False, True)]
    for name, col in dest.columns.items():
        pk = name in keys
        cols.append(ColumnSchema(name, col.type, col.length if col.type == "string" else None,
                                 col.nullable and not pk, pk))
    return TableSchema(dest.table, tuple(cols))


# --- steps of a migration -----------------------------------------------------------------------
@dataclass(frozen=True)
class CreateTable:
    schema: TableSchema

    def describe(self) -> str:
        return f"create table {self.schema.table} ({', '.join(c.describe() for c in self.schema.columns)})"


@dataclass(frozen=True)
class AddColumn:
    column: ColumnSchema

    def describe(self) -> str:
        return f"add column {self.column.describe()}"


@dataclass(frozen=True)
class KeepColumn:
    """A column the configuration no longer declares: left in the table (dropping data is the
    operator's decision), no longer written."""

    name: str

    def describe(self) -> str:
        return f"keep column {self.name} (no longer in the configuration; not dropped, no longer written)"


@dataclass(frozen=True)
class Adopt:
    """A table that exists without a recorded revision (made before migrations were recorded, or by
    hand) becomes revision 1 as it is."""

    table: str

    def describe(self) -> str:
        return f"adopt existing table {self.table} (no revision recorded)"


Step = CreateTable | AddColumn | KeepColumn | Adopt


@dataclass(frozen=True)
class LiveTable:
    """What the database has: the table's column names and primary key (from its catalogue)."""

    columns: frozenset[str]
    primary_key: frozenset[str]
    nullable: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TablePlan:
    resource: str
    wanted: TableSchema
    #: The latest recorded revision (0: none).
    revision: int
    steps: tuple[Step, ...] = ()
    #: Why the migration cannot be applied automatically (empty: it can).
    refused: tuple[str, ...] = ()
    #: A revision is applied only when steps change the table or the recorded schema differs.
    records: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def table(self) -> str:
        return self.wanted.table

    @property
    def status(self) -> str:
        if self.refused:
            return "refused"
        return "pending" if self.records else "up to date"

    @property
    def next_revision(self) -> int:
        return self.revision + 1 if self.records else self.revision

    def describe(self) -> list[str]:
        head = f"{self.table} (resource {self.resource}): "
        if self.refused:
            lines = [head + f"revision {self.revision}; cannot migrate automatically:"]
            lines += [f"  - {r}" for r in self.refused]
            return lines
        if not self.records:
            return [head + f"up to date (revision {self.revision})"]
        lines = [head + f"revision {self.revision} -> {self.revision + 1}:"]
        lines += [f"  - {s.describe()}" for s in self.steps] or ["  - record the configuration's schema"]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


_ALTER = ("alter the table yourself (or drop it to start over), then run `integrations rest migrate "
          "<yaml> --accept` to record the configuration as the table's next revision")


def plan_table(
    resource: str,
    wanted: TableSchema,
    recorded: tuple[int, TableSchema] | None,
    live: LiveTable | None,
) -> TablePlan:
    """Pure: the migration that takes the table from ``recorded`` (latest revision and its schema)
    and ``live`` (None: no such table) to ``wanted``."""
    revision = recorded[0] if recorded else 0
    if live is None:
        notes = (f"revision {revision} is recorded but the table is missing: created again",) if recorded else ()
        return TablePlan(resource, wanted, revision, (CreateTable(wanted),), records=True, notes=notes)
    if recorded is None:
        return _adopt(resource, wanted, live)
    old = recorded[1]
    if old.same_as(wanted):
        return TablePlan(resource, wanted, revision)
    refused: list[str] = []
    if set(old.primary_key) != set(wanted.primary_key):
        refused.append(f"primary key changes from ({', '.join(old.primary_key)}) to ({', '.join(wanted.primary_key)})")
    steps: list[Step] = []
    for col in wanted.columns:
        before = old.column(col.name)
        if before is None:
            if col.name in live.columns:
                continue  # already there (added by hand): recorded as declared
            if not col.nullable:
                refused.append(f"new column {col.name} is declared nullable: false: the existing rows have no value for it")
            else:
                steps.append(AddColumn(col))
        elif (before.type, before.length) != (col.type, col.length):
            refused.append(f"column {col.name} changes type from {before.describe().split(' ', 1)[1]} to "
                           f"{col.describe().split(' ', 1)[1]}")
        elif before.nullable != col.nullable and not col.primary_key:
            refused.append(f"column {col.name} changes from {'nullable' if before.nullable else 'not null'} to "
                           f"{'nullable' if col.nullable else 'not null'}")
    for col in old.columns:
        if wanted.column(col.name) is None:
            if not col.nullable and not col.primary_key:
                refused.append(f"column {col.name} was removed from the configuration but is NOT NULL in the table: "
                               "new rows could not be written")
            else:
                steps.append(KeepColumn(col.name))
    if refused:
        return TablePlan(resource, wanted, revision, refused=(*refused, _ALTER))
    return TablePlan(resource, wanted, revision, tuple(steps), records=True)


def _adopt(resource: str, wanted: TableSchema, live: LiveTable) -> TablePlan:
    refused: list[str] = []
    if live.primary_key and set(live.primary_key) != set(wanted.primary_key):
        refused.append(f"the existing table's primary key is ({', '.join(sorted(live.primary_key))}), the "
                       f"configuration's ({', '.join(wanted.primary_key)})")
    steps: list[Step] = [Adopt(wanted.table)]
    for col in wanted.columns:
        if col.name not in live.columns:
            if col.primary_key or not col.nullable:
                refused.append(f"the existing table has no column {col.name} ({col.describe()})")
            else:
                steps.append(AddColumn(col))
    for name in sorted(live.columns - set(wanted.names)):
        if name not in live.nullable:
            refused.append(f"the existing table's column {name} is NOT NULL and not in the configuration")
    if refused:
        return TablePlan(resource, wanted, 0, refused=(*refused, _ALTER))
    return TablePlan(resource, wanted, 0, tuple(steps), records=True,
                     notes=("column types of an adopted table are not checked",))


def accept_plan(resource: str, wanted: TableSchema, recorded: tuple[int, TableSchema] | None,
                live: LiveTable | None) -> TablePlan:
    """Pure: record ``wanted`` as the next revision without changing the table (``--accept``, after the
    operator altered it); refused when the table lacks a declared column."""
    revision = recorded[0] if recorded else 0
    if live is None:
        return TablePlan(resource, wanted, revision, refused=(f"there is no table {wanted.table} to accept: "
                                                              "run `integrations rest migrate <yaml>` to create it",))
    missing = [c.name for c in wanted.columns if c.name not in live.columns]
    if missing:
        return TablePlan(resource, wanted, revision, refused=(f"the table has no column(s) {', '.join(missing)} "
                                                              "the configuration declares",))
    if recorded and recorded[1].same_as(wanted):
        return TablePlan(resource, wanted, revision)
    return TablePlan(resource, wanted, revision, records=True, notes=("accepted as altered by the operator",))


def drift(wanted: TableSchema, recorded: tuple[int, TableSchema] | None) -> str | None:
    """Pure: why a sync must not write into this table now (None: the configuration is migrated)."""
    if recorded is None:
        return f"destination table {wanted.table} has not been migrated"
    revision, old = recorded
    if old.same_as(wanted):
        return None
    changes: list[str] = []
    for col in wanted.columns:
        before = old.column(col.name)
        if before is None:
            changes.append(f"{col.name} added")
        elif before != col:
            changes.append(f"{col.name} changed ({before.describe()} -> {col.describe()})")
    changes += [f"{c.name} removed" for c in old.columns if wanted.column(c.name) is None]
    return (f"the configuration of destination table {wanted.table} changed since its migration "
            f"(revision {revision}): {', '.join(changes)}")


def as_dict(plan: TablePlan) -> dict[str, Any]:
    return {"table": plan.table, "resource": plan.resource, "status": plan.status, "revision": plan.revision,
            "next_revision": plan.next_revision, "steps": [s.describe() for s in plan.steps],
            "refused": list(plan.refused), "notes": list(plan.notes)}
