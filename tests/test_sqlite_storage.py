"""``SqliteStorage`` (our dagster.yaml's storage): Dagster's SQLite storage whose run shards are copies of a
template. The shards must be exactly what Dagster makes, readable by Dagster's own storage, never
overwritten, and made once under concurrent first writes."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, execute_job, instance_for_test, reconstructable
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from integrations_dagster.orchestration.sqlite_storage import TEMPLATE_PREFIX, SqliteStorage, TemplateShardEventLogStorage
from tests.support.print_job import printing_job

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = {"storage": {"custom": {"module": "integrations_dagster.orchestration.sqlite_storage", "class": "SqliteStorage",
                                 "config": {}}}}


def _entry(run_id: str, text: str) -> EventLogEntry:
    return EventLogEntry(error_info=None, level=20, user_message=text, run_id=run_id, timestamp=time.time())


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    return [*rows, ("alembic", str(version), None), ("journal_mode", str(mode), None)]


def test_a_new_run_shard_is_a_copy_of_the_template_and_what_dagster_makes(tmp_path: Path) -> None:
    ours = TemplateShardEventLogStorage(str(tmp_path / "ours"))
    theirs = SqliteEventLogStorage(str(tmp_path / "theirs"))
    run_id = str(uuid.uuid4())
    with ours.run_connection(run_id):
        pass
    with theirs.run_connection(run_id):
        pass
    shard = tmp_path / "ours" / f"{run_id}.db"
    template = Path(ours.template_path)
    assert template.name.startswith(TEMPLATE_PREFIX) and not template.name.endswith(".db")
    assert shard.read_bytes() == template.read_bytes()  # made by copy, not table by table
    assert _schema(shard) == _schema(tmp_path / "theirs" / f"{run_id}.db")  # same schema, stamp and WAL mode
    assert not [p for p in (tmp_path / "ours").iterdir() if p.suffix == ".tmp"]


def test_shards_it_makes_are_read_by_dagsters_own_storage_and_never_overwritten(tmp_path: Path) -> None:
    base = str(tmp_path / "runs")
    ours = TemplateShardEventLogStorage(base)
    run_id = str(uuid.uuid4())
    ours.store_event(_entry(run_id, "first"))
    # Dagster's default storage on the same directory (a DAGSTER_HOME switched back) reads it and writes on
    theirs = SqliteEventLogStorage(base)
    assert [e.user_message for e in theirs.get_logs_for_run(run_id)] == ["first"]
    theirs.store_event(_entry(run_id, "second"))
    # a fresh instance of ours (another process) must not replace the existing shard
    again = TemplateShardEventLogStorage(base)
    again.store_event(_entry(run_id, "third"))
    assert [e.user_message for e in again.get_logs_for_run(run_id)] == ["first", "second", "third"]


def test_concurrent_first_writes_to_one_run_make_one_shard_and_lose_nothing(tmp_path: Path) -> None:
    base = str(tmp_path / "runs")
    TemplateShardEventLogStorage(base).run_connection(str(uuid.uuid4())).__enter__()  # the template exists
    run_id = str(uuid.uuid4())
    storages = [TemplateShardEventLogStorage(base) for _ in range(6)]  # as separate processes would hold
    start = threading.Barrier(len(storages))
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            start.wait()
            storages[k].store_event(_entry(run_id, f"writer {k}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(storages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = sorted(e.user_message for e in SqliteEventLogStorage(base).get_logs_for_run(run_id))
    assert got == sorted(f"writer {k}" for k in range(len(storages)))


def test_an_instance_configured_with_it_runs_jobs_and_lists_no_template_as_a_run(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    with instance_for_test(overrides=CUSTOM, temp_dir=str(tmp_path / "home")) as instance:
        assert type(instance.event_log_storage) is TemplateShardEventLogStorage
        results = [execute_job(reconstructable(printing_job), instance=instance) for _ in range(2)]
        assert all(r.success for r in results)
        runs_dir = tmp_path / "home" / "history" / "runs"
        assert any(p.name.startswith(TEMPLATE_PREFIX) for p in runs_dir.iterdir())
        assert {r.run_id for r in instance.get_runs()} == {r.run_id for r in results}
        for r in results:
            assert instance.all_logs(r.run_id, of_type=DagsterEventType.RUN_SUCCESS)


def test_the_shipped_dagster_yaml_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    try:
        assert type(instance.event_log_storage) is TemplateShardEventLogStorage
        assert instance.get_ref().storage_data.class_name == SqliteStorage.__name__  # what dagster.yaml named
        assert os.path.isdir(home / "history" / "runs")
    finally:
        instance.dispose()
