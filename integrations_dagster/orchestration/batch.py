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
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    MetadataValue,
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
    checks_recorder,
    health_before,
    run_alive_check,
)
from integrations_dagster.orchestration.resource import IntegrationsResource

BATCH_IO_KEY = "integrations_batch_io"
BATCH_TAG = "integrations/batch"
BATCH_SIZE_TAG = "integrations/batch_size"
_MAPPING_KEY = re.compile(r"^i([0-9]+(?:_[0-9]+)*)$")
_quiet = logging.getLogger("integrations_dagster.batch")


def batch_job_name(provider_key: str) -> str:
    return f"{provider_key}_sync_batch"


def plan_op_name(provider_key: str) -> str:
    return f"{provider_key}_batch_plan"


def step_op_name(provider_key: str) -> str:
    return f"{provider_key}_sync_integration"


def mapping_key(integration_id: int | Sequence[int]) -> str:
    """``i<id>`` for one integration, ``i<id>_<id>_...`` for the members of one step."""
    ids = [integration_id] if isinstance(integration_id, int) else list(integration_id)
    if not ids:
        raise ValueError("a batch step has at least one integration")
    return "i" + "_".join(str(int(i)) for i in ids)


def members_of(key: str | None) -> list[int]:
    """The integration ids a mapping key names (``i<id>`` or ``i<id>_<id>_...``)."""
    match = _MAPPING_KEY.match(key or "")
    if match is None:
        raise ValueError(f"mapping key {key!r} does not name integrations (expected i<id> or i<id>_<id>_...)")
    return [int(i) for i in match.group(1).split("_")]


def integration_of(key: str | None) -> int:
    ids = members_of(key)
    if len(ids) != 1:
        raise ValueError(f"mapping key {key!r} names {len(ids)} integrations, not one")
    return ids[0]


#: The batch job's console logger prints warnings and errors only: a run worker otherwise prints (and
#: captures in its compute log) a line per Dagster event. The event log, which the UI reads, is unchanged.
QUIET_LOGGERS: dict[str, Any] = {"console": {"config": {"log_level": "WARNING"}}}


def batch_run_config(provider_key: str, integration_ids: list[int]) -> dict[str, Any]:
    return {"ops": {plan_op_name(provider_key): {"config": {"integration_ids": [int(i) for i in integration_ids]}}},
            "loggers": QUIET_LOGGERS}


def batch_members(provider_key: str, run_config: Any) -> list[int]:
    """The integration ids a ``<key>_sync_batch`` run was launched with (from its run config)."""
    try:
        ids = run_config["ops"][plan_op_name(provider_key)]["config"]["integration_ids"]
        return [int(i) for i in ids]
    except (KeyError, TypeError, ValueError):
        return []


def step_groups(ids: Sequence[int], per_step: int) -> list[list[int]]:
    """The shard's ids (first occurrence only, in order) cut into consecutive groups of at most ``per_step``
    with sizes differing by at most one: the members of each mapped step."""
    from integrations_dagster.engine.fleet import shard

    seen: set[int] = set()
    unique = [int(i) for i in ids if not (int(i) in seen or seen.add(int(i)))]  # type: ignore[func-returns-value]
    return shard(unique, max(1, per_step))


class IdFromMappingKey(IOManager):
    """Stores nothing: the value of each ``<key>_batch_plan`` output is the list of integration ids its
    mapping key ``i<id>_<id>...`` names, so loading it (also in a re-execution, in another process) reads the
    key back."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if mapping_key(obj) != context.mapping_key:
            raise ValueError(f"output {obj!r} does not match its mapping key {context.mapping_key!r}")

    def load_input(self, context: InputContext) -> list[int]:
        upstream = context.upstream_output
        return members_of(upstream.mapping_key if upstream is not None else None)


_pooled: weakref.WeakSet[Any] = weakref.WeakSet()


def pool_dagster_connections(instance: Any) -> None:
    """Let this process's Dagster instance keep its database connections open (a pool of one per storage,
    up to three more under load) instead of opening one per event write: dagster-postgres's default
    (``NullPool``) costs a PostgreSQL connection, and a server process, per event - the largest single
    cost of a batch run's steps (docs/BENCHMARKS.md, "Fleet"). ``DagsterInstance.optimize_for_webserver``
    is the public method ``dagster-webserver`` calls for the same reason; no statement timeout is set (0).
    A no-op for SQLite storage; called once per instance."""
    if instance is None or instance in _pooled:
        return
    try:
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=3)
    except Exception as exc:  # an instance without it (or a storage that refuses): keep its default
        _quiet.warning("could not pool the Dagster instance's connections: %s", exc)
    _pooled.add(instance)


@io_manager(description="The batch plan's outputs are the integration ids its mapping keys name: nothing stored.")
def id_from_mapping_key(init_context: Any) -> IdFromMappingKey:
    # Every batch run (and every re-execution of one) initialises this resource once, before its steps.
    pool_dagster_connections(getattr(init_context, "instance", None))
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


@dataclass
class _MemberOutcome:
    """What one member's sync came to in this attempt of its step."""

    integration_id: int
    failure: str | None = None  # a Failure description (items failed, enumeration failed, an error)
    metadata: dict[str, Any] = field(default_factory=dict)
    wait_seconds: float | None = None  # items wait for a retry: hand the step back to Dagster
    retryable: bool = False  # an unexpected error: the step's RetryPolicy may try again


def _run_chain(context: OpExecutionContext) -> list[str]:
    """This Dagster run's id and its ancestors' (the runs it was re-executed from), nearest first."""
    chain = [context.run_id]
    parent = context.run.parent_run_id
    while parent and parent not in chain:
        chain.append(parent)
        run = context.instance.get_run_by_id(parent)
        parent = run.parent_run_id if run is not None else None
    return chain


def build_batch_job(provider: Provider, engine: SyncEngine, executor: ExecutorDefinition) -> Any:
    key = provider.key
    per_step = engine.settings.batch_step_size

    @op(
        name=plan_op_name(key),
        config_schema={"integration_ids": [int]},
        out=DynamicOut(list, io_manager_key=BATCH_IO_KEY),
        tags={"kind": "plan"},
    )
    def plan_op(context: OpExecutionContext):  # type: ignore[no-untyped-def]
        """One mapped step per group of the shard's integrations (mapping key ``i<id>_<id>...``)."""
        for members in step_groups(context.op_config["integration_ids"], per_step):
            yield DynamicOutput(members, mapping_key=mapping_key(members))

    def sync_member(context: OpExecutionContext, store: Any, iid: int, action: str, prior: Any,
                    log: _StepLog, known: Any) -> _MemberOutcome:
        """One integration's sync inside a batch step (``action``: ``engine.fleet.member_action``;
        ``known``: the integration as the step read it with its other members at its start, None when
        it has no row)."""
        from integrations_dagster.engine.fleet import FAILED_BEFORE, REOPEN, RESUME
        from integrations_dagster.errors import IntegrationNotFound

        out = _MemberOutcome(iid)
        integration = known
        if integration is None:
            out.failure = str(IntegrationNotFound(iid))
            return out
        if integration.provider_key != key:
            out.failure = f"integration {iid} belongs to provider {integration.provider_key!r}, not {key!r}"
            return out
        if action == FAILED_BEFORE:
            out.failure = (f"enumeration of {integration} failed earlier in this run (sync run {prior.id}); "
                           "cursor unchanged")
            out.metadata = {"sync_run_id": int(prior.id)}
            return out
        reopen = action == REOPEN
        before = integration

        def _checks_for(settled: Any) -> tuple[Any, Any]:
            return checks_recorder(store, engine, settled, health_before(before),
                                   record_anyway=action in (RESUME, REOPEN))

        if action in (RESUME, REOPEN):
            run_id, chunks = int(prior.id), list(range(int(prior.chunks)))
            integration = store.get_integration(iid)  # as it is now, for the listeners (a rare path)
        else:
            start = engine.start_run(
                store, iid, dagster_run_id=context.run_id, trigger=context.run.tags.get(TRIGGER_TAG, "schedule"),
                is_run_alive=run_alive_check(context.instance),
            )
            if start.skipped:
                context.log.warning(start.skipped_reason or "skipped")
                context.log_event(AssetObservation(asset_key=asset_key(key), partition=str(iid),
                                                   metadata={"status": "skipped", "reason": start.skipped_reason or ""}))
                return out
            assert start.run_id is not None
            # The row as start_run read it under its lock: the cursor this run starts from, and the
            # health before it (for _checks_for).
            integration = before = start.integration
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
                out.failure = f"enumeration of {integration} failed; cursor unchanged: {safe_error(exc, integration)}"
                out.metadata = {"sync_run_id": start.run_id}
                return out
            run_id, chunks = result.run_id, result.chunks_to_run()  # not those applied at write (engine.apply)
            if result.items == 0:
                settled = engine.reconcile(store, run_id, log=log)
                _record(context, settled, *_checks_for(settled))
                return out

        failed = succeeded = 0
        failed_items: list[tuple[int, str | None, str]] = []
        failed_chunk: int | None = None
        waits: list[float] = []
        for chunk in chunks:
            res = engine.process_chunk(store, run_id, chunk, reopen_failed=reopen, dagster_run_id=context.run_id,
                                       log=log, integration=integration)
            succeeded += res.succeeded
            if res.waiting:
                waits.append(res.wait_seconds)
            if res.failed:
                failed += res.failed
                failed_items.extend(res.failed_items)
                failed_chunk = chunk if failed_chunk is None else failed_chunk
        if waits:  # hand the step back to Dagster; other steps run meanwhile
            out.wait_seconds = min(waits)
            return out
        settled = engine.reconcile(store, run_id, log=log)
        _record(context, settled, *_checks_for(settled))
        failed = max(failed, settled.failed if settled.final else 0)
        if failed:
            from integrations_dagster.orchestration.failure_text import ChunkFailure

            text = ChunkFailure(integration_id=iid, sync_run_id=run_id, chunk=failed_chunk or 0,
                                failed_items=failed_items, failed=failed, succeeded=succeeded,
                                tries=engine.settings.item_tries)
            out.failure, out.metadata = text.description(), text.metadata()
        return out

    @op(
        name=step_op_name(key),
        ins={"integration_ids": In(list)},
        out={},
        retry_policy=RetryPolicy(max_retries=3, delay=1, backoff=Backoff.EXPONENTIAL),
        tags={"kind": "sync"},
    )
    def sync_integration_op(context: OpExecutionContext, integrations: IntegrationsResource,  # type: ignore[no-untyped-def]
                            integration_ids: list[int]):
        """Enumerate, process every chunk and reconcile each integration of the step, one after the other
        (each its own sync run and cursor); one member's failure does not stop the others."""
        from integrations_dagster.engine.fleet import DONE, START, PriorSync, member_action
        from integrations_dagster.store import runs as run_sql

        store = integrations.get_store()
        ids = [int(i) for i in integration_ids]
        log = _StepLog(context)
        first_attempt = context.retry_number == 0
        priors: dict[int, PriorSync] = {}
        if not first_attempt or context.run.parent_run_id:  # a retry, or a re-execution: what ran before
            for iid, row in run_sql.latest_owned_runs(store, ids, _run_chain(context)).items():
                priors[iid] = PriorSync(id=int(row.id), status=str(row.status), enumerated=row.enumerated_at is not None,
                                        chunks=int(row.chunks or 0), this_run=row.dagster_run_id == context.run_id)
        outcomes: list[_MemberOutcome] = []
        actions = {iid: member_action(priors[iid], first_attempt=first_attempt) if iid in priors else START
                   for iid in ids}
        # Every member's integration row in one read (start_run reads each again under its lock).
        known = store.get_integrations([iid for iid in ids if actions[iid] != DONE])
        for iid in ids:
            prior = priors.get(iid)
            action = actions[iid]
            if action == DONE:
                continue
            try:
                outcomes.append(sync_member(context, store, iid, action, prior, log, known.get(iid)))
            except Exception as exc:  # an unexpected error (a database outage...): the others still sync
                from integrations_dagster.security.redaction import safe_error

                try:
                    text = safe_error(exc, store.get_integration(iid))
                except Exception:
                    text = f"{type(exc).__name__}"
                context.log.error(f"integration {iid}: {text}")
                outcomes.append(_MemberOutcome(iid, failure=f"integration {iid}: {text}", retryable=True))
        waits = [o.wait_seconds for o in outcomes if o.wait_seconds is not None]
        if waits:
            raise RetryRequested(max_retries=100_000, seconds_to_wait=min(waits))
        failures = [o for o in outcomes if o.failure]
        if failures:
            description = "\n\n".join(o.failure or "" for o in failures)
            if len(ids) > 1:
                description = (f"{len(failures)} of the {len(ids)} integrations of this step failed "
                               f"({', '.join(str(o.integration_id) for o in failures)}); the others synced. "
                               "Re-execute from failure syncs only the failed ones again.\n\n" + description)
            metadata: dict[str, Any] = dict(failures[0].metadata) if len(failures) == 1 else {}
            metadata["failed_integration_ids"] = MetadataValue.json([o.integration_id for o in failures])
            raise Failure(description=description, metadata=metadata,
                          allow_retries=any(o.retryable for o in failures))

    @job(
        name=batch_job_name(key),
        executor_def=executor,
        tags={PROVIDER_TAG: key, BATCH_TAG: "true"},
        description=(f"Sync a shard of small {key} integrations in one run: mapped steps of up to {per_step} "
                     f"integrations (mapping key i<id>_<id>...), each integration with its own sync run, cursor and "
                     f"timeline partition. Launched by {key}_sync_sensor; one-off syncs use {key}_sync."),
    )
    def sync_batch_job():  # type: ignore[no-untyped-def]
        plan_op().map(sync_integration_op)

    return sync_batch_job
