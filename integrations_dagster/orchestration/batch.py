"""``<key>_sync_batch``: many small syncs in one Dagster run, one mapped step per integration.

Why: a Dagster run launched by the daemon is a fresh interpreter (about 5 CPU-s with our code location,
docs/BENCHMARKS.md), so one run per small sync caps a machine at a few dozen syncs per minute. A batch
run pays that once for a shard of integrations (the sync sensor makes the shards,
``engine.fleet.plan_tick``), and each integration stays its own step:

- ``<key>_batch_plan`` (op config ``integration_ids``) yields one ``DynamicOutput`` per integration, mapping
  key ``i<id>`` (Dagster restricts mapping keys to ``[A-Za-z0-9_]``);
- ``<key>_sync_integration``, mapped, runs that integration's whole sync through the engine exactly as the
  partitioned job's three steps do (``start_run`` under single flight, ``enumerate``, every chunk's
  ``process_chunk`` with per-item retries, ``reconcile``), and logs
  ``AssetMaterialization(asset_key=["integrations", key], partition=<integration id>)`` plus the two health
  checks for that partition, so the integration's timeline and checks look the same whichever job ran it
  (Dagster docs, "AssetMaterialization": ``partition`` may name any partition of the asset; logged from an
  op with ``context.log_event``).

A failure in one integration fails only its step: the other steps go on (the in-process executor runs every
step whose inputs are ready; a failed mapped step has no downstream step here) and the run ends failed.
**Re-execute from failure** (Dagster docs, "Re-execution": ``ReexecutionOptions.from_failure`` and the
UI's *From failure*) runs only the failed steps again; each finds the sync run its parent step left
(``SyncEngine.resumable_run``, by the parent's Dagster run id) and reopens its failed items, like the
partitioned job's re-executed chunk steps, or starts a fresh sync when the parent never enumerated.

The plan step's outputs are the integration ids, which the mapping keys already spell, so its IO manager
(``IdFromMappingKey``) stores nothing and a re-executed step reads its id back from
``InputContext.upstream_output.mapping_key`` (public ``InputContext``/``OutputContext`` API): no file per
integration, and re-execution still works across processes.
"""


import logging
import re
from typing import Any

from dagster import (
    AssetObservation,
    Backoff,
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    Failure,
    In,
    InputContext,
    IOManager,
    OpExecutionContext,
    OutputContext,
    RetryPolicy,
    RetryRequested,
    io_manager,
    job,
    op,
)

from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.orchestration.definitions import (
    PROVIDER_TAG,
    TRIGGER_TAG,
    _record,
    asset_key,
    run_alive_check,
)
from integrations_dagster.orchestration.resource import IntegrationsResource

BATCH_IO_KEY = "integrations_batch_io"
BATCH_TAG = "integrations/batch"
BATCH_SIZE_TAG = "integrations/batch_size"
_MAPPING_KEY = re.compile(r"^i([0-9]+)$")
_quiet = logging.getLogger("integrations_dagster.batch")


def batch_job_name(provider_key: str) -> str:
    return f"{provider_key}_sync_batch"


def plan_op_name(provider_key: str) -> str:
    return f"{provider_key}_batch_plan"


def step_op_name(provider_key: str) -> str:
    return f"{provider_key}_sync_integration"


def mapping_key(integration_id: int) -> str:
    return f"i{int(integration_id)}"


def integration_of(key: str | None) -> int:
    match = _MAPPING_KEY.match(key or "")
    if match is None:
        raise ValueError(f"mapping key {key!r} does not name an integration (expected i<id>)")
    return int(match.group(1))


def batch_run_config(provider_key: str, integration_ids: list[int]) -> dict[str, Any]:
    return {"ops": {plan_op_name(provider_key): {"config": {"integration_ids": [int(i) for i in integration_ids]}}}}


def batch_members(provider_key: str, run_config: Any) -> list[int]:
    """The integration ids a ``<key>_sync_batch`` run was launched with (from its run config)."""
    try:
        ids = run_config["ops"][plan_op_name(provider_key)]["config"]["integration_ids"]
        return [int(i) for i in ids]
    except (KeyError, TypeError, ValueError):
        return []


class IdFromMappingKey(IOManager):
    """Stores nothing: the value of each ``<key>_batch_plan`` output is the integration id its mapping key
    ``i<id>`` names, so loading it (also in a re-execution, in another process) reads the key back."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if mapping_key(obj) != context.mapping_key:
            raise ValueError(f"output {obj!r} does not match its mapping key {context.mapping_key!r}")

    def load_input(self, context: InputContext) -> int:
        upstream = context.upstream_output
        return integration_of(upstream.mapping_key if upstream is not None else None)


@io_manager(description="The batch plan's outputs are the integration ids its mapping keys name: nothing stored.")
def id_from_mapping_key(_init_context: Any) -> IdFromMappingKey:
    return IdFromMappingKey()


class _StepLog:
    """Engine log lines of a batch step: warnings and errors go to the Dagster run log (the UI), info and
    debug to the Python logger only (each Dagster log line is a row in the event log: with hundreds of
    integrations per run they would cost more than the syncs)."""

    def __init__(self, context: OpExecutionContext) -> None:
        self._dagster = context.log

    def debug(self, msg: str, *a: Any, **k: Any) -> None:
        _quiet.debug(msg, *a, **k)

    def info(self, msg: str, *a: Any, **k: Any) -> None:
        _quiet.info(msg, *a, **k)

    def warning(self, msg: str, *a: Any, **k: Any) -> None:
        self._dagster.warning(msg, *a, **k)

    warn = warning

    def error(self, msg: str, *a: Any, **k: Any) -> None:
        self._dagster.error(msg, *a, **k)

    def exception(self, msg: str, *a: Any, **k: Any) -> None:
        self._dagster.error(msg, *a, **k)


def build_batch_job(provider: Provider, engine: SyncEngine, executor: ExecutorDefinition) -> Any:
    key = provider.key

    @op(
        name=plan_op_name(key),
        config_schema={"integration_ids": [int]},
        out=DynamicOut(int, io_manager_key=BATCH_IO_KEY),
        tags={"kind": "plan"},
    )
    def plan_op(context: OpExecutionContext):  # type: ignore[no-untyped-def]
        """One mapped step per integration of the shard (mapping key ``i<id>``)."""
        seen: set[int] = set()
        for iid in context.op_config["integration_ids"]:
            if iid in seen:
                continue
            seen.add(iid)
            yield DynamicOutput(int(iid), mapping_key=mapping_key(iid))

    @op(
        name=step_op_name(key),
        ins={"integration_id": In(int)},
        out={},
        retry_policy=RetryPolicy(max_retries=3, delay=1, backoff=Backoff.EXPONENTIAL),
        tags={"kind": "sync"},
    )
    def sync_integration_op(context: OpExecutionContext, integrations: IntegrationsResource, integration_id: int):  # type: ignore[no-untyped-def]
        """Enumerate, process every chunk and reconcile one integration (its own sync run and cursor)."""
        store = integrations.get_store()
        iid = int(integration_id)
        log = _StepLog(context)
        from integrations_dagster.errors import IntegrationNotFound

        try:
            integration = store.get_integration(iid)
        except IntegrationNotFound as exc:
            raise Failure(description=str(exc), allow_retries=False) from None
        if integration.provider_key != key:
            raise Failure(description=f"integration {iid} belongs to provider {integration.provider_key!r}, "
                          f"not {key!r}", allow_retries=False)

        resume = None
        reopen = False
        parent = context.run.parent_run_id
        if context.retry_number > 0:  # an earlier attempt of this step (in this run, or the parent's run
            # when that attempt found nothing to reopen and so left the sync run under the parent's id)
            resume = engine.resumable_run(store, iid, context.run_id) or (
                engine.resumable_run(store, iid, parent) if parent else None)
        elif parent is not None:  # re-executed from failure: the sync run the parent's step left
            resume = engine.resumable_run(store, iid, parent)
            reopen = resume is not None
        if resume is not None:
            run_id, chunks = int(resume.id), int(resume.chunks)
        else:
            start = engine.start_run(
                store, iid, dagster_run_id=context.run_id, trigger=context.run.tags.get(TRIGGER_TAG, "schedule"),
                is_run_alive=run_alive_check(context.instance),
            )
            if start.skipped:
                context.log.warning(start.skipped_reason or "skipped")
                context.log_event(AssetObservation(asset_key=asset_key(key), partition=str(iid),
                                                   metadata={"status": "skipped", "reason": start.skipped_reason or ""}))
                return
            assert start.run_id is not None
            integration = store.get_integration(iid)  # the cursor as start_run left it
            from integrations_dagster.authoring.context import http_factory_for

            try:
                result = engine.enumerate(store, integration, start.run_id, log=log,
                                          http_factory=http_factory_for(engine, store, provider, integration,
                                                                        start.run_id))
            except Exception as exc:
                from integrations_dagster.orchestration.checks import log_health_checks
                from integrations_dagster.security.redaction import safe_error

                context.log_event(AssetObservation(
                    asset_key=asset_key(key), partition=str(iid),
                    metadata={"status": "failed", "sync_run_id": start.run_id, "error": safe_error(exc, integration)}))
                log_health_checks(context, store, engine, iid)
                raise Failure(
                    description=f"enumeration of {integration} failed; cursor unchanged: {safe_error(exc, integration)}",
                    metadata={"sync_run_id": start.run_id}, allow_retries=False,
                ) from None
            run_id, chunks = result.run_id, result.chunks
            if result.items == 0:
                _record(context, engine.reconcile(store, run_id, log=log), store, engine)
                return

        failed = succeeded = 0
        failed_items: list[tuple[int, str | None, str]] = []
        failed_chunk: int | None = None
        waits: list[float] = []
        for chunk in range(chunks):
            res = engine.process_chunk(store, run_id, chunk, reopen_failed=reopen, dagster_run_id=context.run_id,
                                       log=log)
            succeeded += res.succeeded
            if res.waiting:
                waits.append(res.wait_seconds)
            if res.failed:
                failed += res.failed
                failed_items.extend(res.failed_items)
                failed_chunk = chunk if failed_chunk is None else failed_chunk
        if waits:  # hand the step back to Dagster; other integrations' steps run meanwhile
            raise RetryRequested(max_retries=100_000, seconds_to_wait=min(waits))
        _record(context, engine.reconcile(store, run_id, log=log), store, engine)
        if failed:
            from integrations_dagster.orchestration.failure_text import ChunkFailure

            text = ChunkFailure(integration_id=iid, sync_run_id=run_id, chunk=failed_chunk or 0,
                                failed_items=failed_items, failed=failed, succeeded=succeeded,
                                tries=engine.settings.item_tries)
            raise Failure(description=text.description(), metadata=text.metadata(), allow_retries=False)

    @job(
        name=batch_job_name(key),
        executor_def=executor,
        tags={PROVIDER_TAG: key, BATCH_TAG: "true"},
        description=(f"Sync a shard of small {key} integrations in one run: one step per integration (mapping "
                     f"key i<id>), each with its own sync run, cursor and timeline partition. Launched by "
                     f"{key}_sync_sensor; one-off syncs use {key}_sync."),
    )
    def sync_batch_job():  # type: ignore[no-untyped-def]
        plan_op().map(sync_integration_op)

    return sync_batch_job
