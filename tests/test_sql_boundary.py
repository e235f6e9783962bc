"""SQL lives only in ``integrations_dagster/store/`` (issue 10).

An AST scan of the framework package: outside ``store/`` no module may import SQLAlchemy, nor the
store's table definitions (``integrations_dagster.store.models``), except the few names below, each
with the reason it is not SQL of the framework's own tables. A query that moves back into the
engine, the sensors or the HTTP layer fails this test; an allow-list entry that is no longer needed
fails it too, so the list stays exact.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "integrations_dagster"
STORE = PACKAGE / "store"

#: module (relative to the package) -> the SQLAlchemy names it may import, and why.
ALLOWED: dict[str, set[str]] = {
    # Connection handles passed through to store functions: type annotations only (TYPE_CHECKING).
    "engine/engine.py": {"sqlalchemy.Connection"},
    "engine/reconcile.py": {"sqlalchemy.Connection"},
    "engine/supersede.py": {"sqlalchemy.Connection"},
    # The staged listener's connection handed to the pipeline's guard (engine/pipeline.py), which
    # reads the run's status through the store: annotations only.
    "engine/dispatch.py": {"sqlalchemy.Connection"},
    "engine/pipeline.py": {"sqlalchemy.Connection"},
    # The writer's connection handed to store.items (ids, COPY, savepoint) and to StagedBatch: annotations only.
    "engine/apply.py": {"sqlalchemy.Connection"},
    # The CLI: error type of a database it cannot open, and URL rendering with the password hidden
    # (imported lazily so that the read-only commands stay SQLAlchemy-free, see store/quick.py).
    "cli.py": {"sqlalchemy.exc.SQLAlchemyError", "sqlalchemy.engine.make_url"},
    # Whether a configured database URL carries a password (parsing, no database access).
    "orchestration/resource.py": {"sqlalchemy.engine.make_url"},
    # Dagster's own SQLite storage (not ours): an engine on a scratch file that Dagster's initialisation
    # makes the run-shard template from; no SQL of ours.
    "orchestration/sqlite_storage.py": {"sqlalchemy.create_engine", "sqlalchemy.pool.NullPool"},
    # Provider authoring API: a provider declares its own tables (a MetaData) and upgrades them on
    # the connection the framework hands it; the framework never queries them.
    "authoring/tables.py": {"sqlalchemy.Connection", "sqlalchemy.MetaData"},
    # ``StagedBatch``: the author-facing set-based SQL over a batch's staged events, run by the
    # listener (its own SQL, on its own tables), on the listener's transaction.
    "authoring/staged.py": {"sqlalchemy.text", "sqlalchemy.engine.Connection", "sqlalchemy.engine.CursorResult"},
    # Declarative REST: the connection handle passed through to store.rest_tables (annotation only);
    # the destination tables' DDL, migrations and upsert SQL live in store/rest_tables.py.
    "declarative/migrate.py": {"sqlalchemy.Connection"},
}


def _imports(path: Path) -> set[str]:
    """Fully qualified names ``path`` imports from SQLAlchemy or the store's models (at any depth,
    including imports inside functions and ``TYPE_CHECKING`` blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _guarded(alias.name):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _guarded(node.module) or _guarded(full):
                    found.add(full)
    return found


def _guarded(name: str) -> bool:
    return (name == "sqlalchemy" or name.startswith("sqlalchemy.")
            or name == "integrations_dagster.store.models" or name.startswith("integrations_dagster.store.models."))


def _modules_outside_store() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if STORE not in p.parents)


def test_no_sql_outside_the_store() -> None:
    violations = []
    for path in _modules_outside_store():
        rel = path.relative_to(PACKAGE).as_posix()
        extra = _imports(path) - ALLOWED.get(rel, set())
        if extra:
            violations.append(f"{rel}: {', '.join(sorted(extra))}")
    assert not violations, (
        "SQL belongs in integrations_dagster/store/ (a Store method or a store module with typed "
        "results); these modules import SQLAlchemy or the store's tables:\n  " + "\n  ".join(violations)
    )


def test_allow_list_is_exact() -> None:
    stale = []
    for rel, names in sorted(ALLOWED.items()):
        path = PACKAGE / rel
        unused = names - (_imports(path) if path.exists() else set())
        if unused:
            stale.append(f"{rel}: {', '.join(sorted(unused))}")
    assert not stale, "allow-list entries no longer needed (remove them):\n  " + "\n  ".join(stale)


def test_the_scan_sees_sql(tmp_path: Path) -> None:
    """The scanner itself: plain, aliased, nested, dotted and models imports are all seen."""
    src = tmp_path / "m.py"
    src.write_text(
        "import sqlalchemy as sa\n"
        "from sqlalchemy import select, update as upd\n"
        "def f():\n"
        "    from sqlalchemy.dialects.sqlite import insert\n"
        "    from integrations_dagster.store import models as m\n"
        "    from integrations_dagster.store.models import sync_runs\n"
        "    from integrations_dagster.store import Store\n",
        encoding="utf-8",
    )
    assert _imports(src) == {
        "sqlalchemy", "sqlalchemy.select", "sqlalchemy.update", "sqlalchemy.dialects.sqlite.insert",
        "integrations_dagster.store.models", "integrations_dagster.store.models.sync_runs",
    }
