"""Runs the Dagster UI can re-execute, created and executed in this process.

The UI (GraphQL ``launchRunReexecution``, dagster_graphql ``launch_reexecution_from_parent_run``)
finds the code location of a parent run through ``parent_run.remote_job_origin``; a run made by
``execute_job(reconstructable(...))`` has none, so **Re-execute** failed on every run that
``integrations sync --wait`` (no daemon), ``integrations retry`` and the demo created. Those runs are
now created the way ``dagster job launch -w workspace.yaml`` creates its run (``dagster/_cli/job.py``
``_create_run``: ``instance.create_run(..., remote_job_origin=remote_job.get_remote_origin())``), with
the origin of the workspace's code location, and then executed here exactly as ``execute_job`` does
(``dagster/_core/execution/api.py`` ``_logged_execute_job`` / ``_reexecute_job``: ``create_run_for_job``
then ``execute_run``). Nothing else changes: same instance, same tags, same in-process executor, no
code server, no daemon. Measured cost: see docs/OPERATIONS.md ("Runs the UI can re-execute").

Which code location: the ``python_module`` entry of the workspace file (argument, else
``$INTEGRATIONS_WORKSPACE``, else ``./workspace.yaml``) whose module (and attribute) match the
``DefinitionsRef``; Dagster's own parser builds the origin, so the location name is the one the
webserver and the daemon use. Without such an entry (a factory with keyword arguments, no
workspace file) the origin is the one ``dagster dev -m MODULE -a ATTR`` would load.

Private Dagster used (dagster 1.13.27 has no public API that creates a run carrying a remote origin
without a workspace process, nor one that executes an existing run in this process; keep it all here):

- ``dagster._core.workspace.load``: ``location_origins_from_yaml_paths``, ``location_origin_from_module_name``
  (the code location origin as the webserver builds it; no code server is started);
- ``dagster._core.execution.api``: ``execute_run``, ``create_execution_plan`` (what ``execute_job`` calls);
- ``dagster._core.execution.plan.state.KnownExecutionState.build_resume_retry_reexecution`` (the steps a
  FROM_FAILURE re-execution runs; the UI calls the same in ``run_domain.create_reexecuted_run``).

``DagsterInstance.create_run_for_job`` is a method of the public ``DagsterInstance``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRun

#: Tags Dagster's UI sets on a from-failure re-execution (``dagster._core.storage.tags``).
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
ROOT_RUN_ID_TAG = "dagster/root_run_id"
RESUME_RETRY_TAG = "dagster/is_resume_retry"
#: Parent tags the UI does not copy to a re-execution (``TAGS_TO_MAYBE_OMIT_ON_RETRY`` and the origin tag).
_NOT_INHERITED = ("dagster/run_key", "dagster/code_location", "dagster/retry_number", "dagster/will_retry",
                  "dagster/auto_retry_run_id", "dagster/backfill", "dagster/parent_backfill_id",
                  "dagster/root_backfill_id")


def _workspace_file(workspace: str | os.PathLike[str] | None) -> Path | None:
    raw = workspace or os.environ.get("INTEGRATIONS_WORKSPACE")
    path = Path(raw) if raw else Path("workspace.yaml")
    return path.resolve() if path.is_file() else None


def workspace_location_origin(ref: Any, workspace: str | os.PathLike[str] | None = None) -> Any:
    """The origin of the workspace file's code location that loads ``ref``, or None."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    path = _workspace_file(workspace)
    if path is None or ref.kwargs:
        return None
    try:
        origins = location_origins_from_yaml_paths([str(path)])
    except Exception:  # a broken workspace file must not stop a sync; `dagster dev` reports it itself
        return None
    for origin in origins:
        target = getattr(origin, "loadable_target_origin", None)
        if target is None or target.module_name != ref.module:
            continue
        if target.attribute in (None, ref.attr):
            return origin
    return None


def code_location_origin(ref: Any, workspace: str | os.PathLike[str] | None = None) -> Any:
    """The code location origin whose definitions are ``ref`` (see the module docstring)."""
    from dagster._core.workspace.load import location_origin_from_module_name

    origin = workspace_location_origin(ref, workspace)
    return origin if origin is not None else location_origin_from_module_name(ref.module, ref.attr, os.getcwd())


def job_origin(ref: Any, job_name: str, workspace: str | os.PathLike[str] | None = None) -> Any:
    """The ``RemoteJobOrigin`` for ``job_name`` in the code location of ``ref``."""
    from dagster._core.remote_origin import RemoteRepositoryOrigin

    repository_name = ref.load().get_repository_def().name
    return RemoteRepositoryOrigin(code_location_origin(ref, workspace), repository_name).get_job_origin(job_name)


def _loaded(ref: Any, job_name: str) -> tuple[Any, Any, Any]:
    recon = ref.reconstructable_job(job_name)
    load_data = recon.repository.get_definition().repository_load_data
    recon = recon.with_repository_load_data(load_data)
    return recon, recon.get_definition(), load_data


def execute_run_with_origin(
    ref: Any,
    job_name: str,
    *,
    instance: DagsterInstance,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> DagsterRun:
    """``execute_job(ref.reconstructable_job(job_name), ...)`` whose run carries its code location's origin."""
    from dagster._core.execution.api import execute_run

    recon, job_def, load_data = _loaded(ref, job_name)
    run_id = str(uuid.uuid4())
    run = instance.create_run_for_job(
        job_def=job_def,
        run_id=run_id,
        run_config=dict(run_config or {}),
        tags={**job_def.run_tags, **tags, **owner_tags(run_id)},
        remote_job_origin=job_origin(ref, job_name, workspace),
        job_code_origin=recon.get_python_origin(),
        repository_load_data=load_data,
    )
    # Not entered as a context manager: that re-initialises the job's resources to load outputs (two more
    # Dagster events and a resource start per run), and no caller reads an output.
    return execute_run(recon, run, instance, raise_on_error=False).dagster_run


def reexecute_run_from_failure(
    ref: Any,
    parent_run_id: str,
    *,
    instance: DagsterInstance,
    extra_tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> DagsterRun:
    """Re-execute a failed run from failure in this process, as the UI does (only the failed steps
    and what depends on them; the parent's tags carried over); the child carries the origin too."""
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.execution.plan.state import KnownExecutionState

    parent = instance.get_run_by_id(parent_run_id)
    if parent is None:
        raise LookupError(f"Dagster run {parent_run_id} not found")
    recon, job_def, load_data = _loaded(ref, parent.job_name)
    config = dict(run_config) if run_config is not None else dict(parent.run_config)
    step_keys, known_state = KnownExecutionState.build_resume_retry_reexecution(instance, parent_run=parent)
    root = parent.root_run_id or parent.run_id
    tags = {k: v for k, v in parent.tags.items() if k not in _NOT_INHERITED}
    tags.update(extra_tags or {})
    tags.update({PARENT_RUN_ID_TAG: parent.run_id, ROOT_RUN_ID_TAG: root, RESUME_RETRY_TAG: "true"})
    plan = create_execution_plan(recon, config, step_keys_to_execute=step_keys, known_state=known_state,
                                 tags=parent.tags)
    run_id = str(uuid.uuid4())
    run = instance.create_run_for_job(
        job_def=job_def,
        execution_plan=plan,
        run_id=run_id,
        run_config=config,
        tags={**job_def.run_tags, **tags, **owner_tags(run_id)},
        root_run_id=root,
        parent_run_id=parent.run_id,
        remote_job_origin=job_origin(ref, parent.job_name, workspace),
        job_code_origin=recon.get_python_origin(),
        repository_load_data=load_data,
    )
    # Not entered as a context manager: that re-initialises the job's resources to load outputs (two more
    # Dagster events and a resource start per run), and no caller reads an output.
    return execute_run(recon, run, instance, raise_on_error=False).dagster_run


def owner_tags(run_id: str) -> dict[str, str]:
    """The tag naming the process about to execute run ``run_id`` here (``engine.owner``), given to
    the run when it is created: if this process is killed at any moment after that (even before the
    run starts), the next sync sees the pid gone and reclaims the run instead of waiting on it.
    (Adding the tag after creation left a window in which a killed process left an ownerless
    NOT_STARTED run that every later ``sync --wait`` waited on.)"""
    from integrations_dagster.engine.owner import OWNER_TAG, owner_tag_value

    return {OWNER_TAG: owner_tag_value(run_id)}


def submit_run_to_queue(
    ref: Any,
    job_name: str,
    *,
    instance: DagsterInstance,
    tags: Mapping[str, str],
    workspace: str | os.PathLike[str] | None = None,
) -> str | None:
    """Create the run ``dagster job launch -w WORKSPACE`` would create and put it on the run queue,
    in this process (no Python start, no code server: about 7 s less on our machines).

    Returns None, and the caller uses ``dagster job launch``, unless the instance's run coordinator is
    Dagster's ``QueuedRunCoordinator`` (whose ``submit_run`` only enqueues and never reads the
    workspace, ``dagster/_core/run_coordinator/queued_run_coordinator.py``) and the workspace file has
    the code location of ``ref`` (the daemon must find the run's location by name).
    """
    from dagster import QueuedRunCoordinator
    from dagster._core.remote_origin import RemoteRepositoryOrigin

    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        return None
    location = workspace_location_origin(ref, workspace)
    if location is None:
        return None
    recon, job_def, load_data = _loaded(ref, job_name)
    origin = RemoteRepositoryOrigin(location, ref.load().get_repository_def().name).get_job_origin(job_name)
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config={},
        tags={**job_def.run_tags, **tags},
        remote_job_origin=origin,
        job_code_origin=recon.get_python_origin(),
        repository_load_data=load_data,
    )
    instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]  # unused by QueuedRunCoordinator
    return run.run_id
