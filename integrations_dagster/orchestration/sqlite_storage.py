"""Dagster's SQLite storage with run shards made from a template: ``SqliteStorage`` (our ``dagster.yaml``).

Dagster's default SQLite storage keeps each run's events in a database file of its own
(``history/runs/<run id>.db``). The first event of every run creates that file: the tables and indexes
one by one, then an Alembic stamp, for which Alembic loads every revision script of the event log's
migrations (about 90 Python files). Measured here: 120-170 ms per run, half of it CPU, which is a large
part of a small sync (docs/BENCHMARKS.md, "Fixed cost of one sync").

Here the first shard a directory needs is made that way once, kept as a template next to the shards
(``.run-shard-template-<dagster version>.sqlite``: not ``*.db``, so Dagster never takes it for a run),
and every new run's shard is a copy of it: a file copy of a few hundred kilobytes. The copy is
byte-for-byte what Dagster would have created (the template *is* such a shard, made by Dagster's own
code, for this Dagster version), and it is put in place with ``link``, which fails if the shard exists:
a shard another process created meanwhile (the webserver, the run worker) is never overwritten; then, and
for anything that is not a brand-new shard, Dagster's own initialisation runs as before.

Everything else is Dagster's ``DagsterSqliteStorage``: the same files, layout, schema and behaviour, so
a ``DAGSTER_HOME`` can move between this and Dagster's default at any time. Configured in
``dagster.yaml`` (replace the block with ``storage: postgres: ...`` for PostgreSQL, as in ``deploy/``)::

    storage:
      custom:
        module: integrations_dagster.orchestration.sqlite_storage
        class: SqliteStorage

``base_dir`` (in ``config:``) defaults to ``$DAGSTER_HOME``, as Dagster's default storage does; a process
that opens an instance without ``DAGSTER_HOME`` set (``DagsterInstance.from_config(path)``) gets a clear
error unless ``base_dir`` is given.

Dagster has no public module for storage classes; they are imported from the modules its own
``dagster.yaml`` documentation names.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from typing import Any

import dagster
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

TEMPLATE_PREFIX = ".run-shard-template-"


def base_dir_of(config: dict[str, Any], key: str) -> str:
    """``config["base_dir"]``, else ``$DAGSTER_HOME`` (where the instance's ``dagster.yaml`` is, for every
    Dagster process: the webserver, the daemon, run workers); a clear error when neither is set."""
    base_dir = config.get("base_dir") or os.environ.get("DAGSTER_HOME")
    if not base_dir:
        raise ValueError(f"set DAGSTER_HOME (or {key} in dagster.yaml): this storage keeps Dagster's files there")
    return str(base_dir)


class TemplateShardEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose new run shards are copies of a template (see the module docstring)."""

    _template_lock = threading.Lock()

    @property
    def template_path(self) -> str:
        return os.path.join(self._base_dir, f"{TEMPLATE_PREFIX}{dagster.__version__}.sqlite")

    def _initdb(self, engine: Any, for_index_shard: bool = False) -> None:
        path = getattr(engine.url, "database", None)
        if not for_index_shard and path and not os.path.exists(path) and self._shard_from_template(path):
            return
        super()._initdb(engine, for_index_shard=for_index_shard)

    def _shard_from_template(self, path: str) -> bool:
        """Put a copy of the template at ``path``; False when a file appeared there meanwhile (another
        process made the shard: Dagster's initialisation then checks it) or no template can be made."""
        template = self._template()
        if template is None:
            return False
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(template, tmp)
            os.link(tmp, path)  # atomic, and never over an existing shard
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links, a full disk: Dagster's own way
            return False
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return True

    def _template(self) -> str | None:
        """The template shard, made (once per directory and Dagster version) by Dagster's own
        initialisation on a scratch file; None if that left anything but one closed database file."""
        path = self.template_path
        if os.path.exists(path):
            return path
        with self._template_lock:
            if os.path.exists(path):
                return path
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            scratch = os.path.join(self._base_dir, f"{TEMPLATE_PREFIX}{uuid.uuid4().hex}.tmp")
            engine = create_engine(f"sqlite:///{scratch}", poolclass=NullPool)
            try:
                super()._initdb(engine)
            finally:
                engine.dispose()
            try:
                if any(os.path.exists(scratch + suffix) for suffix in ("-wal", "-shm", "-journal")):
                    return None  # not checkpointed into the one file: do not copy it
                os.replace(scratch, path)  # the same bytes whoever wins
            finally:
                for leftover in (scratch, scratch + "-wal", scratch + "-shm"):
                    try:
                        os.unlink(leftover)
                    except OSError:
                        pass
        return path


class SqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (``storage: sqlite``) with run shards from a template."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = TemplateShardEventLogStorage(os.path.join(base_dir, "history", "runs", ""))

    @classmethod
    def config_type(cls) -> Any:
        from dagster import Field, StringSource

        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Any) -> SqliteStorage:
        return cls.from_local(base_dir_of(dict(config_value or {}), "storage: custom: config: base_dir"),
                              inst_data=inst_data)
