"""Is a database already at the migrations' head? Answered without importing Alembic.

``Store.migrate`` runs on every first use of a database in a process; Alembic's import alone costs
about 0.5 s here, more than a whole CLI verb may take. The head revisions are read from the migration
files' ``revision`` / ``down_revision`` assignments (``ast``, no import of the files), the current
ones from ``alembic_version``; only when they differ does ``migrate`` run Alembic.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # SQLAlchemy is imported by at_head only: store/quick.py reads heads without it
    from sqlalchemy import Connection

VERSIONS = Path(__file__).parent / "migrations" / "versions"


def _assigned(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        if name in ("revision", "down_revision"):
            try:
                out[name] = ast.literal_eval(value)
            except ValueError:
                out[name] = ...  # not a literal: let Alembic decide
    return out


@functools.cache
def head_revisions(versions: Path = VERSIONS) -> frozenset[str] | None:
    """The revisions no other revision builds on; None when a file cannot be read statically."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        found = _assigned(ast.parse(path.read_text(), filename=str(path)))
        rev, down = found.get("revision"), found.get("down_revision")
        if not isinstance(rev, str) or down is ...:
            return None
        revisions.add(rev)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, (tuple, list)):
            parents.update(str(d) for d in down)
        elif down is not None:
            return None
    heads = revisions - parents
    return frozenset(heads) if heads else None


def at_head(conn: Connection) -> bool:
    """True when ``alembic_version`` holds exactly the head revisions (False when in doubt).

    Use a connection of its own: on PostgreSQL a failed read aborts the transaction it ran in.
    """
    from sqlalchemy import text

    heads = head_revisions()
    if heads is None:
        return False
    try:
        current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except Exception:  # no table yet (a new database), or it cannot be read: migrate
        return False
    return current == set(heads)
