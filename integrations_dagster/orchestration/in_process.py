"""Running sync jobs outside the daemon: the CLI's ``sync --wait`` and ``retry``, the demo, the tests.

``execute_job`` needs a reconstructable job so that re-execution (and the multiprocess executor)
can load it again; ``DefinitionsRef`` names where the definitions live (a module attribute holding
``Definitions``, or a factory function called with JSON-able keyword arguments).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRun,
    Definitions,
    build_reconstructable_job,
)

from integrations_dagster.orchestration.dagster_storage import add_dynamic_partition
from integrations_dagster.orchestration.definitions import (
    DIRECTION_TAG,
    INTEGRATION_TAG,
    PROVIDER_TAG,
    TRIGGER_TAG,
    job_name,
    partitions_name,
)


@dataclass(frozen=True)
class DefinitionsRef:
    module: str
    attr: str = "defs"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Definitions:
        return load_definitions(self.module, self.attr, json.dumps(self.kwargs, sort_keys=True))

    def reconstructable_job(self, name: str) -> Any:
        return build_reconstructable_job(
            "integrations_dagster.orchestration.in_process",
            "load_job",
            # Dagster annotates this parameter ``tuple[object]`` (one element) but passes any tuple through
            reconstructable_args=(self.module, self.attr, json.dumps(self.kwargs, sort_keys=True), name),  # type: ignore[arg-type]
        )


class DefinitionsCache:
    """The definitions this process loaded through a ``DefinitionsRef``, by (module, attr, kwargs).

    Dagster reloads a reconstructable job through ``load_job`` for every step and re-execution;
    building the definitions again each time would cost a module import and a job build per step.
    One instance per process (``definitions_cache``); ``clear()`` forgets everything (tests that
    rebuild a module, a forked worker).
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str, str], Definitions] = {}

    def load(self, module: str, attr: str, kwargs_json: str) -> Definitions:
        key = (module, attr, kwargs_json)
        defs = self._loaded.get(key)
        if defs is None:
            target = getattr(importlib.import_module(module), attr)
            kwargs = json.loads(kwargs_json)
            defs = target(**kwargs) if callable(target) and not isinstance(target, Definitions) else target
            if not isinstance(defs, Definitions):
                raise TypeError(f"{module}.{attr} is not Definitions (or a function returning them)")
            self._loaded[key] = defs
        return defs

    def clear(self) -> None:
        self._loaded.clear()


definitions_cache = DefinitionsCache()


def load_definitions(module: str, attr: str, kwargs_json: str) -> Definitions:
    return definitions_cache.load(module, attr, kwargs_json)


def load_job(module: str, attr: str, kwargs_json: str, name: str) -> Any:
    return load_definitions(module, attr, kwargs_json).resolve_job_def(name)


_frozen = False


def freeze_long_lived_objects() -> None:
    """Once per process, before its first run here: ``gc.freeze()`` what is alive now.

    A process that executes a sync holds about 200,000 long-lived objects (Dagster's and pydantic's
    modules, the loaded definitions, the instance); each full collection of Python's cyclic garbage
    collector walks all of them (~0.1 s here), and a sync of 10,000 items triggers one or two. Frozen
    objects are left out of every later collection (what the ``gc.freeze`` documentation recommends for
    objects that live as long as the process). Only the first call freezes, so garbage made between runs
    of a long process is collected as usual.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def ensure_partition(instance: DagsterInstance, provider_key: str, integration_id: int) -> None:
    add_dynamic_partition(instance, partitions_name(provider_key), str(integration_id))


def sync_tags(provider_key: str, integration_id: int, trigger: str, direction: str | None = None) -> dict[str, str]:
    extra = {DIRECTION_TAG: direction} if direction else {}
    return extra | {
        "dagster/partition": str(integration_id),
        "dagster/partition_set": f"{job_name(provider_key)}_partition_set",
        PROVIDER_TAG: provider_key,
        INTEGRATION_TAG: str(integration_id),
        TRIGGER_TAG: trigger,
    }


def execute_sync(
    ref: DefinitionsRef,
    provider_key: str,
    integration_id: int,
    *,
    instance: DagsterInstance,
    trigger: str = "manual",
    tags: dict[str, str] | None = None,
    log_level: str = "DEBUG",
    workspace: str | os.PathLike[str] | None = None,
    direction: str | None = None,
) -> DagsterRun:
    """Execute one sync run in this process against ``instance``; it appears in the UI's run history.

    ``log_level`` only affects what is echoed to this process's console; the event log keeps everything.
    The run carries the origin of the code location of ``ref`` in ``workspace`` (default
    ``$INTEGRATIONS_WORKSPACE``, else ``./workspace.yaml``), so the UI can re-execute it.
    """
    freeze_long_lived_objects()
    ensure_partition(instance, provider_key, integration_id)
    all_tags = sync_tags(provider_key, integration_id, trigger, direction)
    all_tags.update(tags or {})
    # Like execute_job, but the run carries its code location's origin, so the UI can re-execute it.
    from integrations_dagster.orchestration.reexecutable import execute_run_with_origin

    return execute_run_with_origin(
        ref, job_name(provider_key), instance=instance, tags=all_tags, run_config=_console(log_level),
        workspace=workspace,
    )


def _console(log_level: str) -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": log_level.upper()}}}}


def reexecute_from_failure(
    ref: DefinitionsRef, dagster_run_id: str, *, instance: DagsterInstance, log_level: str = "DEBUG"
) -> DagsterRun:
    """Re-execute a failed sync run from failure: only failed chunks run again, then reconcile."""
    parent = instance.get_run_by_id(dagster_run_id)
    if parent is None:
        raise LookupError(f"Dagster run {dagster_run_id} not found")
    from integrations_dagster.orchestration.reexecutable import reexecute_run_from_failure

    # The parent's run config stays (a batch run's shard is in it), with this process's console level.
    config = {**(parent.run_config or {}), **_console(log_level)}
    return reexecute_run_from_failure(
        ref, dagster_run_id, instance=instance, extra_tags={TRIGGER_TAG: "retry"}, run_config=config
    )
