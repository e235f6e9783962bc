"""A run executed in this process carries its owner tag from the moment it is created.

If the tag were added after ``create_run`` (as it was), a process killed in between left a
NOT_STARTED run with no owner: every later ``integrations sync --wait`` found it "in flight" and
waited on it, since nothing could tell it was dead (seen in the kill -9 long mode: killed in
start-up, 3 recovery runs, nothing synced)."""

from __future__ import annotations

import os

from dagster import DagsterRunStatus, instance_for_test

from integrations_dagster import DefinitionsRef, execute_sync, reexecute_from_failure
from integrations_dagster.engine.owner import OWNER_TAG, owner_from_tags
from integrations_dagster.store import Store
from tests.support import recording_run_storage as rec


def test_in_process_runs_are_created_with_their_owner(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path}/owner.sqlite"
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", db)
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    monkeypatch.chdir(tmp_path)
    integ = Store.for_url(db).create_integration(provider_key="synthetic", name="o",
                                                 metadata={"items": 3, "fail_external_ids": ["item-1"]})
    storage = {"module": "tests.support.recording_run_storage", "class": "RecordingRunStorage",
               "config": {"base_dir": str(tmp_path / "runs")}}
    (tmp_path / "home").mkdir()
    with instance_for_test(overrides={"run_storage": storage}, temp_dir=str(tmp_path / "home")) as instance:
        ref = DefinitionsRef("tests.support.sched_app")  # its listener fails poisoned items
        run = execute_sync(ref, "synthetic", integ.id, instance=instance, log_level="WARNING")
        assert run.status == DagsterRunStatus.FAILURE
        child = reexecute_from_failure(ref, run.run_id, instance=instance, log_level="WARNING")
    for r in (run, child):
        tags = rec.CREATED_TAGS[r.run_id]
        assert OWNER_TAG in tags, tags
        owner = owner_from_tags(tags, r.run_id)
        assert owner is not None and owner.pid == os.getpid()
