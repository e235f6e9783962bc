"""A Dagster run storage that remembers each run's tags as the run was first stored (``add_run``),
for tests that care what a run carries from the moment it exists (before any later ``add_run_tags``).

Dagster has no public base class for run storages: this subclasses the default SQLite one, which a
``dagster.yaml`` (or ``instance_for_test(overrides=...)``) names as ``run_storage``.
"""

from __future__ import annotations

from typing import Any

from dagster._core.storage.runs import SqliteRunStorage

CREATED_TAGS: dict[str, dict[str, str]] = {}


class RecordingRunStorage(SqliteRunStorage):
    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> RecordingRunStorage:  # type: ignore[override]
        return cls.from_local(inst_data=inst_data, **config_value)

    def add_run(self, dagster_run: Any) -> Any:
        CREATED_TAGS[dagster_run.run_id] = dict(dagster_run.tags)
        return super().add_run(dagster_run)
