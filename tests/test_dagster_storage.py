"""A Dagster home whose first start-up was killed (found by the kill -9 suite, CI 2026-12-02: a
``integrations sync`` SIGKILLed in its first second left ``history/runs/index.db`` empty, and every
later command failed with "requires the dynamic partitions table ... `dagster instance migrate`").

The broken state is made exactly as the kill leaves it (measured: an empty ``index.db`` file, the run
and schedule databases whole), on Dagster's real SQLite storage.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterInvalidInvocationError, job, op

from integrations_dagster.orchestration.dagster_storage import (
    DagsterStorageNotMigrated,
    add_dynamic_partition,
    dynamic_partition_keys,
)


def _schema(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type in ('table', 'index')")}


def _interrupt_first_start(home: Path) -> None:
    """What a SIGKILL in Dagster's first start-up leaves: the event-log index file exists, empty."""
    index = home / "history" / "runs" / "index.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    index.touch()


@op
def noop() -> None:
    pass


@job
def a_job() -> None:
    noop()


def _instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> DagsterInstance:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return DagsterInstance.get()


def test_an_interrupted_first_start_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    for home in (clean, broken):
        home.mkdir()
        _instance(home, monkeypatch).get_dynamic_partitions("synthetic_integrations")
    _interrupt_first_start(broken)

    instance = _instance(broken, monkeypatch)
    with pytest.raises(DagsterInvalidInvocationError, match="dynamic partitions table"):
        instance.get_dynamic_partitions("synthetic_integrations")  # the state is the real one

    add_dynamic_partition(instance, "synthetic_integrations", "7")
    assert list(dynamic_partition_keys(instance, "synthetic_integrations")) == ["7"]
    # a fresh process (a new instance object) sees a whole storage: the schema of an uninterrupted start
    again = _instance(broken, monkeypatch)
    assert list(again.get_dynamic_partitions("synthetic_integrations")) == ["7"]
    index = Path("history") / "runs" / "index.db"
    assert _schema(broken / index) == _schema(clean / index)


def test_an_instance_with_runs_is_not_migrated_behind_its_operators_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    instance = _instance(home, monkeypatch)
    assert a_job.execute_in_process(instance=instance).success
    _interrupt_first_start(home)

    instance = _instance(home, monkeypatch)
    with pytest.raises(DagsterStorageNotMigrated, match="run `dagster instance migrate`"):
        dynamic_partition_keys(instance, "synthetic_integrations")
    with pytest.raises(DagsterStorageNotMigrated):
        add_dynamic_partition(instance, "synthetic_integrations", "7")
    assert _schema(home / "history" / "runs" / "index.db") == set()  # untouched

