"""Sync now: request an immediate sync of one integration (seed 003's de-duplicated enqueue).

``request_sync`` first looks for a run of the integration's ``<key>_sync`` job for its partition that
is queued or in flight (one ``instance.get_runs`` query); when there is one, its id comes back with
``created=False`` and nothing new starts. Otherwise:

- a dagster-daemon is running for the instance (its run-queue daemon heartbeat is recent): the run
  is put on the run queue as ``dagster job launch -w workspace.yaml`` would put it, so it carries the
  same remote job origin as the runs the daemon and the UI launch from that workspace; the daemon
  launches it when the ``dagster.yaml`` tag limits allow;
- no daemon: the run executes in this process (``execute_sync``), on the same instance, with the same
  origin, so it appears in the UI's run history and the UI can re-execute it. This always waits for
  the run to finish.

Queuing happens in this process (``_reexecutable.submit_run_to_queue``, about 0.4 s) when the
instance uses ``QueuedRunCoordinator`` and the workspace has the definitions' code location; else
through ``dagster job launch`` itself (a Python start and a short-lived code server, 11-13 s on our
2-core machine). The Dagster internals this needs are confined to ``_reexecutable.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from integrations_dagster.errors import IntegrationsError
from integrations_dagster.orchestration.definitions import ALIVE_STATUSES, job_name
from integrations_dagster.orchestration.in_process import DefinitionsRef, ensure_partition, execute_sync, sync_tags

#: The daemon that dequeues runs (``QueuedRunCoordinatorDaemon.daemon_type()``).
RUN_QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
#: Daemons heartbeat every 30 s; two missed beats and a margin mean "not running".
DAEMON_HEARTBEAT_MAX_AGE = 90.0
TERMINAL_STATUSES = frozenset(
    {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
)


@dataclass(frozen=True)
class SyncRequest:
    """What ``request_sync`` did.

    ``run_id``: the Dagster run that will (or did) sync the integration. ``created``: False when an
    existing queued/in-flight run was returned instead of starting another. ``status``: that run's
    status when ``request_sync`` returned. ``mode``: ``existing``, ``queued`` (handed to the daemon)
    or ``in_process`` (executed here, already finished).
    """

    run_id: str
    created: bool
    status: DagsterRunStatus
    mode: Literal["existing", "queued", "in_process"]
    #: Dagster runs found in flight whose executing process is gone (killed ``sync --wait``):
    #: marked failed and reclaimed by this request instead of waited on.
    reclaimed: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def find_active_run(instance: DagsterInstance, provider_key: str, integration_id: int) -> DagsterRun | None:
    """The newest queued or in-flight run of this integration's sync job, or None (one query)."""
    runs = instance.get_runs(
        RunsFilter(
            job_name=job_name(provider_key),
            tags={"dagster/partition": str(integration_id)},
            statuses=list(ALIVE_STATUSES),
        ),
        limit=1,
    )
    return runs[0] if runs else None


def daemon_running(instance: DagsterInstance, *, max_age: float = DAEMON_HEARTBEAT_MAX_AGE) -> bool:
    """True when the instance's run-queue daemon has sent a heartbeat in the last ``max_age`` seconds."""
    beat = instance.get_daemon_heartbeats().get(RUN_QUEUE_DAEMON)
    return beat is not None and time.time() - float(beat.timestamp) <= max_age


def workspace_path(workspace: str | os.PathLike[str] | None = None) -> Path:
    """``workspace``, else ``$INTEGRATIONS_WORKSPACE``, else ``./workspace.yaml``."""
    return Path(workspace or os.environ.get("INTEGRATIONS_WORKSPACE") or "workspace.yaml").resolve()


def definitions_ref_from_workspace(workspace: str | os.PathLike[str] | None = None) -> DefinitionsRef:
    """The ``DefinitionsRef`` of the first ``python_module`` entry of a workspace.yaml."""
    import yaml

    path = workspace_path(workspace)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise IntegrationsError(f"cannot read workspace file {path}: {exc}") from None
    for entry in data.get("load_from") or []:
        target = entry.get("python_module") if isinstance(entry, dict) else None
        if isinstance(target, str):
            return DefinitionsRef(target, "defs")
        if isinstance(target, dict) and target.get("module_name"):
            return DefinitionsRef(target["module_name"], target.get("attribute") or "defs")
    raise IntegrationsError(
        f"{path} has no python_module entry; pass definitions_ref=DefinitionsRef(module, attribute)"
    )


def request_sync(
    *,
    instance: DagsterInstance,
    provider_key: str,
    integration_id: int,
    definitions_ref: DefinitionsRef | None = None,
    wait: bool = False,
    workspace: str | os.PathLike[str] | None = None,
    trigger: str = "manual",
    use_daemon: bool | None = None,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    direction: str | None = None,
) -> SyncRequest:
    """Request an immediate sync of one integration; return the run that will do it.

    - ``wait``: when the run went to the daemon's queue, poll until it finishes (or ``timeout``
      seconds pass). In-process runs always finish before this returns.
    - ``workspace``: the workspace.yaml the daemon loads (default ``$INTEGRATIONS_WORKSPACE`` or
      ``./workspace.yaml``); it also provides the default ``definitions_ref``.
    - ``use_daemon``: None detects a running daemon from its heartbeat; True/False force the path.

    The caller checks that the integration exists and belongs to ``provider_key``; a run for an
    unknown integration fails in its first step with a clear message.
    """
    from integrations_dagster.orchestration.definitions import fail_if_owner_dead

    reclaimed: list[str] = []
    active = find_active_run(instance, provider_key, integration_id)
    while active is not None and active.run_id not in reclaimed and fail_if_owner_dead(instance, active):  # dead: never wait on it
        reclaimed.append(active.run_id)
        active = find_active_run(instance, provider_key, integration_id)
    if active is not None:
        return SyncRequest(run_id=active.run_id, created=False, status=active.status, mode="existing")
    req = _start_sync(instance=instance, provider_key=provider_key, integration_id=integration_id,
                      definitions_ref=definitions_ref, wait=wait, workspace=workspace, trigger=trigger,
                      use_daemon=use_daemon, timeout=timeout, poll_interval=poll_interval, direction=direction)
    return SyncRequest(run_id=req.run_id, created=req.created, status=req.status, mode=req.mode,
                       reclaimed=tuple(reclaimed))


def _start_sync(
    *,
    instance: DagsterInstance,
    provider_key: str,
    integration_id: int,
    definitions_ref: DefinitionsRef | None,
    wait: bool,
    workspace: str | os.PathLike[str] | None,
    trigger: str,
    use_daemon: bool | None,
    timeout: float | None,
    poll_interval: float,
    direction: str | None = None,
) -> SyncRequest:
    if use_daemon is None:
        use_daemon = daemon_running(instance)
    if not use_daemon:
        ref = definitions_ref or definitions_ref_from_workspace(workspace)
        run = execute_sync(ref, provider_key, integration_id, instance=instance, trigger=trigger, workspace=workspace,
                           direction=direction)
        return SyncRequest(run_id=run.run_id, created=True, status=run.status, mode="in_process")
    run_id = submit_to_queue(
        instance=instance, provider_key=provider_key, integration_id=integration_id, workspace=workspace,
        trigger=trigger, definitions_ref=definitions_ref, direction=direction,
    )
    queued = instance.get_run_by_id(run_id)
    status = queued.status if queued is not None else DagsterRunStatus.QUEUED
    if wait:
        status = wait_for_run(instance, run_id, timeout=timeout, poll_interval=poll_interval)
    return SyncRequest(run_id=run_id, created=True, status=status, mode="queued")


def submit_to_queue(
    *,
    instance: DagsterInstance,
    provider_key: str,
    integration_id: int,
    workspace: str | os.PathLike[str] | None = None,
    trigger: str = "manual",
    definitions_ref: DefinitionsRef | None = None,
    direction: str | None = None,
) -> str:
    """Submit a sync run to the instance's run queue; return its id.

    The run is created in this process when the workspace has the code location of the definitions
    (``_reexecutable.submit_run_to_queue``), else with ``dagster job launch``; either way it carries
    the workspace's remote job origin."""
    path = workspace_path(workspace)
    if not path.exists():
        raise IntegrationsError(f"workspace file {path} not found (set INTEGRATIONS_WORKSPACE or pass workspace=)")
    ensure_partition(instance, provider_key, integration_id)
    tags = sync_tags(provider_key, integration_id, trigger, direction)
    from integrations_dagster.orchestration.reexecutable import submit_run_to_queue

    try:
        ref = definitions_ref or definitions_ref_from_workspace(path)
    except IntegrationsError:
        ref = None
    if ref is not None:
        queued = submit_run_to_queue(ref, job_name(provider_key), instance=instance, tags=tags, workspace=path)
        if queued is not None:
            return queued
    run_id = str(uuid.uuid4())
    env = dict(os.environ)
    if instance.root_directory:
        env["DAGSTER_HOME"] = str(instance.root_directory)
    cmd = [
        sys.executable, "-m", "dagster", "job", "launch",
        "-w", str(path), "-j", job_name(provider_key),
        "--tags", json.dumps(tags), "--run-id", run_id,
    ]
    proc = subprocess.run(cmd, env=env, cwd=str(path.parent), capture_output=True, text=True, check=False)
    if proc.returncode != 0 or instance.get_run_by_id(run_id) is None:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise IntegrationsError(
            f"could not submit {job_name(provider_key)} for integration {integration_id} to the run queue "
            f"(dagster job launch exited {proc.returncode}):\n{tail}"
        )
    return run_id


def wait_for_run(
    instance: DagsterInstance, run_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
) -> DagsterRunStatus:
    """Poll the run until it finishes; return its last status (the current one on timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise IntegrationsError(f"Dagster run {run_id} not found")
        if run.status in TERMINAL_STATUSES or (deadline is not None and time.monotonic() >= deadline):
            return run.status
        time.sleep(poll_interval)
