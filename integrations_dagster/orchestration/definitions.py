"""``build_definitions``: one partitioned sync job per provider, plus its asset and resources.

Job shape (per provider ``<key>``): ``<key>_enumerate`` yields one ``DynamicOutput`` per chunk of
items (ids only travel between steps; payloads stay in the state store), ``<key>_process_chunk`` is
mapped over the chunks and runs listeners with per-item retries, ``<key>_reconcile`` collects.
Each chunk step also tries to reconcile when it ends, because Dagster skips the collect step after
a failed chunk, and a run with failed items must still be recorded as partial with its counts.
"""



import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    Backoff,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    DynamicOut,
    DynamicOutput,
    DynamicPartitionsDefinition,
    ExecutorDefinition,
    Failure,
    In,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    PartitionedConfig,
    RetryPolicy,
    RetryRequested,
    in_process_executor,
    job,
    multiprocess_executor,
    op,
)

from integrations_dagster.authoring.listeners import ListenersArg
from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.engine import ReconcileResult, SyncEngine
from integrations_dagster.engine.health import HealthPolicy
from integrations_dagster.orchestration.resource import IntegrationsResource, database_url_config
from integrations_dagster.settings import SyncSettings

# Dagster 1.13 warns "Parameter `owners` of initializer `SensorDefinition.__init__` is currently in
# beta" when it copies a sensor while resolving Definitions (its own ``with_attributes`` passes
# ``owners=[]``); no sensor here sets owners, so the warning only adds noise to the demo and the CLI.
warnings.filterwarnings("ignore", message=r"Parameter `owners` of initializer `SensorDefinition\.__init__`")

PROVIDER_TAG = "integrations/provider"
INTEGRATION_TAG = "integrations/integration_id"
TRIGGER_TAG = "integrations/trigger"
#: Issue 13: ``sync`` (push then pull; the default), ``push`` or ``pull``, for a provider that pushes.
#: Set by ``integrations push|pull|sync`` and the push sensor; settable in the Launchpad's tags.
DIRECTION_TAG = "integrations/direction"
ALIVE_STATUSES = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
}


def job_name(provider_key: str) -> str:
    return f"{provider_key}_sync"


def partitions_name(provider_key: str) -> str:
    return f"{provider_key}_integrations"


def asset_key(provider_key: str) -> AssetKey:
    return AssetKey(["integrations", provider_key])


def run_alive_check(instance: DagsterInstance) -> Callable[[str | None], bool | None]:
    def check(dagster_run_id: str | None) -> bool | None:
        if not dagster_run_id:
            return None
        run = instance.get_run_by_id(dagster_run_id)
        if run is None:
            return False
        if run.status in ALIVE_STATUSES and fail_if_owner_dead(instance, run):
            return False
        return run.status in ALIVE_STATUSES

    return check


def fail_if_owner_dead(instance: Any, run: Any) -> bool:
    """A queued/in-flight Dagster run executed by a process of this host that is gone (killed
    ``integrations sync --wait``): mark it failed (``report_run_failed``) so Dagster stops
    reporting it alive, and return True. Runs without an owner tag (daemon, UI) are left to
    Dagster's run monitoring."""
    from integrations_dagster.engine.owner import owner_alive, owner_from_tags

    owner = owner_from_tags(run.tags, run.run_id)
    if owner is None or owner_alive(owner.host, owner.pid) is not False:
        return False
    instance.report_run_failed(
        run, f"the process executing this run (pid {owner.pid} on {owner.host}) is gone: it was killed "
        "or crashed; marked failed by the next sync, which reclaims and reconciles its sync run")
    return True


def health_before(integration: Any) -> dict[str, Any]:
    """The integration's state its two health checks were last recorded from, before a run
    (``checks_recorder``; JSON-able: it travels in the partitioned job's chunk outputs)."""
    return {"health": integration.health, "last_run_status": integration.last_run_status,
            "enabled": bool(integration.enabled)}


def checks_recorder(store: Any, engine: Any, settled: ReconcileResult, before: dict[str, Any] | None, *,
                    record_anyway: bool) -> tuple[Any, Any]:
    """(store, engine) when the step that settled a run records the two health checks, else (None, None).

    A clean run of an integration that was healthy, enabled and last succeeded leaves both verdicts as
    recorded (``engine.fleet.health_checks_unchanged``: two Dagster events saved per sync), in a batch
    step and in the partitioned job alike. ``record_anyway``: a re-execution or a resumed sync (its
    earlier failure changed the verdicts); so does a run whose state before it is unknown (``before``
    None).
    """
    from integrations_dagster.engine.fleet import health_checks_unchanged

    same = before is not None and not record_anyway and health_checks_unchanged(
        health_before=before["health"], last_status_before=before["last_run_status"],
        enabled=bool(before["enabled"]), status=settled.status, failed=settled.failed)
    return (None, None) if same else (store, engine)


def _record(context: OpExecutionContext, result: ReconcileResult, store: Any = None, engine: Any = None) -> None:
    if result.final and result.changed:
        context.log_event(
            AssetMaterialization(
                asset_key=asset_key(result.provider_key),
                partition=str(result.integration_id),
                metadata=result.as_metadata(),
                description=f"sync run {result.run_id}: {result.status}",
            )
        )
        if store is not None and engine is not None:
            from integrations_dagster.orchestration.checks import log_health_checks

            log_health_checks(context, store, engine, result.integration_id)


def build_sync_job(provider: Provider, engine: SyncEngine, executor: ExecutorDefinition) -> Any:
    key = provider.key
    partitions = DynamicPartitionsDefinition(name=partitions_name(key))

    # ``open_run``: yielded only when chunk steps are to run; a run the enumerate step settled (no items, a
    # single-flight skip, every chunk applied at write (engine.apply), a one-chunk run processed here) yields
    # nothing, so Dagster skips the reconcile step.
    @op(name=f"{key}_enumerate", out={"result": DynamicOut(dict), "open_run": Out(Nothing, is_required=False)},
        tags={"kind": "enumerate"})
    def enumerate_op(
        context: OpExecutionContext, integrations: IntegrationsResource
    ) -> Iterator[DynamicOutput[dict[str, Any]] | Output[None]]:
        """Start a sync run (or skip it when one is in flight) and enumerate the provider's items."""
        store = integrations.get_store()
        try:
            integration_id = int(context.partition_key)
        except (ValueError, TypeError):
            raise Failure(description=f"partition key {context.partition_key!r} is not an integration id",
                          allow_retries=False) from None
        from integrations_dagster.errors import IntegrationNotFound

        try:
            integration = store.get_integration(integration_id)
        except IntegrationNotFound as exc:
            raise Failure(description=str(exc), allow_retries=False) from None
        if integration.provider_key != key:
            raise Failure(
                description=f"integration {integration_id} belongs to provider {integration.provider_key!r}, "
                f"not {key!r}",
                allow_retries=False,
            )
        from integrations_dagster.engine.owner import owner_from_tags
        from integrations_dagster.engine.push import parse_direction

        try:
            direction = parse_direction(context.run.tags.get(DIRECTION_TAG)).value if provider.supports_push() else None
        except ValueError as exc:
            raise Failure(description=f"tag {DIRECTION_TAG}: {exc}", allow_retries=False) from None
        if direction is None and context.run.tags.get(DIRECTION_TAG) == "push":
            raise Failure(description=f"provider {key!r} does not push; a push run is not possible",
                          allow_retries=False)
        start = engine.start_run(
            store,
            integration_id,
            dagster_run_id=context.run_id,
            trigger=context.run.tags.get(TRIGGER_TAG, "manual"),
            is_run_alive=run_alive_check(context.instance),
            owner=owner_from_tags(context.run.tags, context.run_id),
            direction=direction,
        )
        if start.skipped:
            context.log.warning(start.skipped_reason or "skipped")
            context.log_event(
                AssetObservation(asset_key=asset_key(key), partition=str(integration_id),
                                 metadata={"status": "skipped", "reason": start.skipped_reason or ""})
            )
            return
        assert start.run_id is not None
        integration_before = integration
        integration = start.integration  # the cursor as start_run left it (read under its lock)
        from integrations_dagster.authoring.context import http_factory_for

        try:
            result = engine.enumerate(
                store, integration, start.run_id, log=context.log,
                http_factory=http_factory_for(engine, store, provider, integration, start.run_id),
                direction=direction,
            )
        except Exception as exc:
            from integrations_dagster.security.redaction import safe_error

            context.log_event(
                AssetObservation(asset_key=asset_key(key), partition=str(integration_id),
                                 metadata={"status": "failed", "sync_run_id": start.run_id,
                                           "error": safe_error(exc, integration)})
            )
            from integrations_dagster.orchestration.checks import log_health_checks

            log_health_checks(context, store, engine, integration_id)
            raise Failure(
                description=f"enumeration of {integration} failed; cursor unchanged: {safe_error(exc, integration)}",
                metadata={"sync_run_id": start.run_id},
                allow_retries=False,
            ) from None
        before = health_before(integration_before)  # travels with each chunk to the step that settles the run
        to_run = result.chunks_to_run()
        if not to_run:  # no items, or all applied at write (engine.apply): no chunk step, no reconcile step
            settled = engine.reconcile(store, result.run_id, log=context.log)
            _record(context, settled, *checks_recorder(store, engine, settled, before, record_anyway=False))
            return
        if len(to_run) == 1 and engine.settings.one_chunk_in_enumerate and \
                _settle_here(context, store, integration, result.run_id, to_run[0], before):
            return
        for chunk in to_run:
            yield DynamicOutput({"run_id": result.run_id, "chunk": chunk, "before": before},
                                mapping_key=f"chunk_{chunk}")
        yield Output(None, output_name="open_run")

    def _settle_after_chunk(context: OpExecutionContext, store: Any, run_id: int, chunk: int,
                            before: dict[str, Any] | None, *, final_only: bool = False) -> ReconcileResult | None:
        """After a chunk was processed (in its chunk step or in the enumerate step): reconcile the run if it
        can be, and record it (timeline, health checks when their verdicts can change); ``final_only``:
        record only a final result (the enumerate step, which otherwise hands the run to its chunk step)."""
        settled = engine.try_reconcile(store, run_id, log=context.log, after_chunk=chunk)
        if settled is not None and (settled.final or not final_only):
            _record(context, settled, *checks_recorder(store, engine, settled, before,
                                                       record_anyway=context.run.parent_run_id is not None))
        return settled

    def _settle_here(context: OpExecutionContext, store: Any, integration: Any, run_id: int, chunk: int,
                    before: dict[str, Any]) -> bool:
        """A run of one chunk to run (a run of one chunk, or one whose other chunks were applied at write):
        its listeners run in the enumerate step, exactly as its chunk step would run them; True when that
        settled the run. Items that failed or wait for a retry beyond
        ``inline_wait_max`` leave it to the chunk step (False), which reports (or retries) them and can be
        re-executed from failure; so does any error here (the chunk step has the retry policy)."""
        try:
            res = engine.process_chunk(store, run_id, chunk, dagster_run_id=context.run_id, log=context.log)
            if res.waiting or res.failed:
                return False
            settled = _settle_after_chunk(context, store, run_id, chunk, before, final_only=True)
            return settled is not None and settled.final
        except Exception as exc:  # noqa: BLE001 - the chunk step takes the run over, with its retry policy
            from integrations_dagster.security.redaction import safe_error

            context.log.warning(f"sync run {run_id}: processing its one chunk in the enumerate step failed "
                                f"({safe_error(exc, integration)}); the chunk step takes it over")
            return False

    @op(
        name=f"{key}_process_chunk",
        retry_policy=RetryPolicy(max_retries=3, delay=1, backoff=Backoff.EXPONENTIAL),
        tags={"kind": "listeners"},
        # No output when this step settled the run itself: when no chunk step of the run yields one
        # (a run of one chunk, the small incremental sync), Dagster skips the reconcile step, which would
        # find nothing left to do (a step and about seven events less per small sync).
        out=Out(dict, is_required=False),
    )
    def process_op(
        context: OpExecutionContext, integrations: IntegrationsResource, chunk: dict[str, Any]
    ) -> Iterator[Output[dict[str, Any]]]:
        """Run the listeners of one chunk's unfinished items, retrying each item inside the step."""
        store = integrations.get_store()
        reopen = context.run.parent_run_id is not None and context.retry_number == 0
        res = engine.process_chunk(
            store, chunk["run_id"], chunk["chunk"], reopen_failed=reopen, dagster_run_id=context.run_id,
            log=context.log,
        )
        if res.waiting:
            raise RetryRequested(max_retries=100_000, seconds_to_wait=res.wait_seconds)
        settled = _settle_after_chunk(context, store, chunk["run_id"], chunk["chunk"], chunk.get("before"))
        if res.failed:
            from integrations_dagster.orchestration.failure_text import ChunkFailure

            text = ChunkFailure(
                integration_id=context.partition_key, sync_run_id=chunk["run_id"], chunk=chunk["chunk"],
                failed_items=res.failed_items, failed=res.failed, succeeded=res.succeeded,
                tries=engine.settings.item_tries,
            )
            raise Failure(description=text.description(), metadata=text.metadata(), allow_retries=False)
        if settled is not None and settled.final:  # nothing left for the reconcile step
            return
        yield Output({"run_id": chunk["run_id"], "chunk": chunk["chunk"], "succeeded": res.succeeded})

    @op(name=f"{key}_reconcile", ins={"open_run": In(Nothing)}, tags={"kind": "reconcile"})
    def reconcile_op(context: OpExecutionContext, integrations: IntegrationsResource, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """Settle the run: counts, status, cursor (idempotent; chunk steps may have done it already)."""
        if not chunks:  # the run was skipped (single flight) or had no items: settled by enumerate
            return {}
        store = integrations.get_store()
        run_id = chunks[0]["run_id"]
        # Chunks no step of this Dagster run processed (a re-execution of a killed run): finish them here.
        leftovers = engine.finish_leftover_chunks(store, run_id, dagster_run_id=context.run_id, log=context.log)
        result = engine.reconcile(store, run_id, log=context.log)
        _record(context, result, store, engine)
        if not result.final:
            raise Failure(description=f"sync run {run_id} still has {result.pending} unfinished items")
        failed = [res for res in leftovers if res.failed]
        if failed:
            from integrations_dagster.orchestration.failure_text import ChunkFailure

            text = ChunkFailure(
                integration_id=context.partition_key, sync_run_id=run_id, chunk=failed[0].chunk,
                failed_items=[it for res in failed for it in res.failed_items],
                failed=sum(res.failed for res in failed), succeeded=sum(res.succeeded for res in leftovers),
                tries=engine.settings.item_tries,
            )
            raise Failure(description=text.description(), metadata=text.metadata(), allow_retries=False)
        return result.as_metadata()

    # Every run of a partition carries the integration tag, however it was launched (sensor, CLI,
    # or the UI's Launchpad), so dagster.yaml's one-run-per-integration queue limit applies to all.
    config = PartitionedConfig(
        partitions_def=partitions,
        run_config_for_partition_key_fn=lambda _key: {},
        tags_for_partition_key_fn=lambda partition_key: {INTEGRATION_TAG: partition_key, PROVIDER_TAG: key},
    )

    @job(
        name=job_name(key),
        config=config,
        executor_def=executor,
        tags={PROVIDER_TAG: key},
        description=f"Sync one {key} integration (partition = integration id).",
    )
    def sync_job() -> None:
        chunks, open_run = enumerate_op()
        reconcile_op(chunks.map(process_op).collect(), open_run)

    return sync_job


#: Celery settings for sync steps (both the executor's app and the workers': ``celery_worker_config``).
#: Acknowledge a task when it ends, not when it starts, and requeue it when its worker dies: a chunk
#: step whose worker is killed is delivered to another worker (its unfinished items are still pending,
#: the advisory claim died with the worker's connection). One task at a time per worker process.
CELERY_TASK_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def celery_executor_config(settings: SyncSettings) -> dict[str, Any]:
    """The ``celery_executor`` config for ``settings``; also the YAML for ``dagster-celery worker start -y``."""
    return {
        "broker": settings.celery_broker,
        "backend": settings.celery_backend,
        "config_source": {**CELERY_TASK_SETTINGS, "task_default_queue": settings.celery_queue},
    }


def _executor(settings: SyncSettings) -> ExecutorDefinition:
    if settings.executor == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": settings.max_concurrent_steps})
    if settings.executor == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:  # pragma: no cover - it is in the lock file
            raise ImportError("SyncSettings(executor='celery') needs dagster-celery (pip install "
                              "dagster-celery==0.29.27)") from exc
        return celery_executor.configured(celery_executor_config(settings))
    return in_process_executor


def build_definitions(
    *,
    providers: Sequence[Provider],
    listeners: ListenersArg,
    settings: SyncSettings | None = None,
    health: HealthPolicy | None = None,
    resources: dict[str, Any] | None = None,
    extra: Iterable[Definitions] = (),
    sensors: bool = True,
    operator_jobs: bool = True,
) -> Definitions:
    """Dagster definitions for ``providers``: per provider a ``<key>_sync`` job partitioned by integration,
    an asset ``["integrations", key]`` (the sync timeline) and, when available, its sensor; plus the
    operator jobs (skip, retry, advance cursor, prune)."""
    settings = settings or SyncSettings()
    from integrations_dagster.orchestration.code_location import (
        make_engine,  # the same engine as the CLI's Dagster-free load_engine
    )

    engine = make_engine(providers=providers, listeners=listeners, settings=settings, health=health)
    executor = _executor(settings)
    jobs = [build_sync_job(p, engine, executor) for p in engine.providers.values()]
    from integrations_dagster.orchestration.batch import BATCH_IO_KEY, build_batch_job, id_from_mapping_key

    # Batch runs always use the in-process executor: a subprocess per integration would cost more than the
    # run worker the batch saves (DAGSTER-NOTES: ~0.6 s per multiprocess step).
    jobs += [build_batch_job(p, engine, in_process_executor) for p in engine.providers.values()]
    jobs_by_name = {j.name: j for j in jobs}
    assets = [
        AssetSpec(
            asset_key(p.key),
            partitions_def=DynamicPartitionsDefinition(name=partitions_name(p.key)),
            description=f"Sync timeline of {p.key} integrations: one materialisation per reconciled run.",
            group_name="integrations",
        )
        for p in engine.providers.values()
    ]
    from integrations_dagster.orchestration.checks import build_health_checks

    checks = [build_health_checks(p.key, engine) for p in engine.providers.values()]
    all_sensors: list[Any] = []
    schedules: list[Any] = []
    # sensors and operator_jobs import this module (job names, tags): imported here, once it is loaded.
    # A module that fails to import fails build_definitions: no silently missing sensors or jobs.
    if sensors:
        from integrations_dagster.orchestration.sensors import build_sync_sensors

        all_sensors.extend(build_sync_sensors(engine=engine, settings=settings, jobs=jobs_by_name))
        from integrations_dagster.orchestration.push_sensor import build_push_sensors

        all_sensors.extend(build_push_sensors(engine=engine, settings=settings))
        from integrations_dagster.orchestration.checks import build_health_sensor

        all_sensors.append(build_health_sensor(engine, running=settings.sensor_default_running,
                                               max_integrations_per_tick=settings.health_max_integrations_per_tick))
    if operator_jobs:
        from integrations_dagster.orchestration.operator_jobs import build_operator_definitions

        op_jobs, op_schedules = build_operator_definitions(engine=engine)
        jobs.extend(op_jobs)
        schedules.extend(op_schedules)
    res: dict[str, Any] = {"integrations": IntegrationsResource(database_url=database_url_config(settings.database_url)),
                           ENGINE_RESOURCE: engine, BATCH_IO_KEY: id_from_mapping_key}
    res.update(resources or {})
    defs = Definitions(
        jobs=jobs, assets=assets, asset_checks=checks, sensors=all_sensors, schedules=schedules, resources=res,
        metadata={"integrations_engine": "integrations_dagster"},
    )
    if extra:
        defs = Definitions.merge(defs, *extra)
    return defs


#: The resource key under which the definitions carry their engine (a plain object: Dagster hands it
#: to no op, since none asks for it), so ``engine_of`` needs no registry of its own.
ENGINE_RESOURCE = "integrations_engine"


def engine_of(defs: Definitions) -> SyncEngine:
    """The engine behind definitions made by ``build_definitions`` (for the CLI and tests)."""
    engine = (defs.resources or {}).get(ENGINE_RESOURCE)
    if not isinstance(engine, SyncEngine):
        raise LookupError("these Definitions were not made by integrations_dagster.build_definitions")
    return engine
