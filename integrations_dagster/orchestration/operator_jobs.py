"""The operator actions as Dagster jobs, launchable from the Launchpad with typed run config.

- ``integrations_skip_item``: skip a failed item (reason kept), then reconcile its run.
- ``integrations_retry_failed_items``: give every failed item of an integration one attempt now.
- ``integrations_advance_cursor``: reclaim stuck items and reconcile the integration's runs.
- ``integrations_retry_mutations``: failed or conflicting outbox mutations back to pending (issue 13).
- ``integrations_skip_mutation``: give up on a failed or conflicting mutation (reason kept).
- ``integrations_prune``: delete old success/skipped items and request log rows; also on the daily
  schedule ``integrations_prune_daily`` (03:00 UTC, running by default: it only deletes rows that
  are complete and older than 30 days, which is what the seed's scheduled prune does).

Re-executing a failed sync run "from failure" in the UI is the UI form of ``integrations retry``.
Each job is one op run by the in-process executor; the result is the op's output metadata, and a
reconciliation that changed a run is recorded on the provider's asset timeline like a sync.
"""

from typing import Any

from dagster import (
    AssetMaterialization,
    Config,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.errors import IntegrationsError
from integrations_dagster.operations import actions as ops
from integrations_dagster.orchestration.checks import log_health_checks
from integrations_dagster.orchestration.definitions import asset_key, run_alive_check
from integrations_dagster.orchestration.resource import IntegrationsResource

SKIP_JOB = "integrations_skip_item"
RETRY_JOB = "integrations_retry_failed_items"
ADVANCE_JOB = "integrations_advance_cursor"
PRUNE_JOB = "integrations_prune"
RETRY_MUTATIONS_JOB = "integrations_retry_mutations"
SKIP_MUTATION_JOB = "integrations_skip_mutation"
PRUNE_SCHEDULE = "integrations_prune_daily"
PRUNE_CRON = "0 3 * * *"

_TENANT_HELP = (
    "Only act within this tenant: an id belonging to another tenant is 'not found'. "
    "Leave empty to act across tenants."
)


class SkipItemConfig(Config):
    item_id: int = Field(description="Id of the failed sync item to skip (see `integrations list-failed-items`).")
    reason: str = Field(default="skipped by an operator from the Dagster UI",
                        description="Why the item is unrecoverable; kept on the item as skip_reason.")
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


class RetryFailedItemsConfig(Config):
    integration_id: int = Field(description="Integration whose failed items get one more attempt now.")
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


class AdvanceCursorConfig(Config):
    integration_id: int = Field(
        description="Integration to nudge: items stuck in processing longer than the job timeout are failed "
        "(so they can be retried or skipped) and its unfinished runs are reconciled again."
    )
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


class PruneConfig(Config):
    days: int = Field(default=ops.DEFAULT_PRUNE_DAYS, ge=0,
                      description="Delete success/skipped item rows and request log rows older than this many "
                      "days. Failed rows always stay until resolved.")
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


class RetryMutationsConfig(Config):
    integration_id: int | None = Field(
        default=None, description="Every failed and conflicting mutation of this integration (when no ids are given)."
    )
    mutation_ids: list[int] = Field(
        default_factory=list, description="Ids of failed or conflicting mutations (see `integrations list-failed-mutations`)."
    )
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


class SkipMutationConfig(Config):
    mutation_id: int = Field(description="Id of the failed or conflicting mutation to give up on.")
    reason: str = Field(default="skipped by an operator from the Dagster UI",
                        description="Why it is given up; kept on the mutation as skip_reason.")
    tenant: str | None = Field(default=None, description=_TENANT_HELP)


def _fail(exc: Exception) -> Failure:
    return Failure(description=str(exc), allow_retries=False)


def _md(value: Any) -> Any:
    if value is None:
        return MetadataValue.text("null")
    if isinstance(value, (dict, list)):
        return MetadataValue.json(value)
    return value


def _record(context: OpExecutionContext, store: Any, integration_id: int, what: str, before: Any, after: Any) -> None:
    """Put a cursor move on the provider's asset timeline (the partition exists once a sync ran)."""
    if before == after:
        return
    try:
        integ = store.get_integration(integration_id, decrypt=False)
        context.log_event(AssetMaterialization(
            asset_key=asset_key(integ.provider_key), partition=str(integration_id),
            description=f"{what}: cursor moved",
            metadata={"operator_action": what, "cursor_before": _md(before), "cursor_after": _md(after)},
        ))
    except Exception as exc:  # the timeline entry is a convenience, never a reason to fail the action
        context.log.warning(f"could not record the cursor move on the asset timeline: {exc}")


def build_operator_definitions(*, engine: SyncEngine) -> tuple[list[Any], list[Any]]:
    """The operator jobs and the daily prune schedule, bound to ``engine``."""

    @op(name="skip_item")
    def skip_item_op(context: OpExecutionContext, config: SkipItemConfig, integrations: IntegrationsResource) -> dict[str, Any]:
        """Skip a failed sync item so the cursor can move past it, then reconcile its run."""
        store = integrations.get_store()
        try:
            res = ops.skip_item(store, engine, config.item_id, reason=config.reason, tenant=config.tenant,
                                log=context.log)
        except (IntegrationsError, LookupError) as exc:
            raise _fail(exc) from None
        context.add_output_metadata({"item_id": res.item_id, "integration_id": res.integration_id,
                                     "sync_run_id": res.sync_run_id, "run_status": res.run_status,
                                     "cursor_before": _md(res.cursor_before), "cursor_after": _md(res.cursor_after)})
        _record(context, store, res.integration_id, f"skip item {res.item_id}", res.cursor_before, res.cursor_after)
        log_health_checks(context, store, engine, res.integration_id)
        return res.as_dict()

    @op(name="retry_failed_items")
    def retry_failed_op(
        context: OpExecutionContext, config: RetryFailedItemsConfig, integrations: IntegrationsResource
    ) -> dict[str, Any]:
        """Give every failed item of the integration one attempt now; reconcile the runs involved."""
        store = integrations.get_store()
        try:
            res = ops.retry_failed_items(store, engine, config.integration_id, tenant=config.tenant, log=context.log)
        except (IntegrationsError, LookupError) as exc:
            raise _fail(exc) from None
        context.add_output_metadata({"retried": res.retried, "succeeded": res.succeeded,
                                     "still_failed": res.still_failed, "superseded": res.superseded,
                                     "cursor_before": _md(res.cursor_before),
                                     "cursor_after": _md(res.cursor_after)})
        _record(context, store, res.integration_id, "retry failed items", res.cursor_before, res.cursor_after)
        log_health_checks(context, store, engine, res.integration_id)
        if res.still_failed:
            raise Failure(
                description=f"{res.still_failed} of {res.retried} failed items of integration "
                f"{res.integration_id} failed again; see `integrations list-failed-items --integration "
                f"{res.integration_id}`",
                metadata={"still_failed": res.still_failed, "succeeded": res.succeeded},
                allow_retries=False,
            )
        return res.as_dict()

    @op(name="advance_cursor")
    def advance_op(context: OpExecutionContext, config: AdvanceCursorConfig, integrations: IntegrationsResource) -> dict[str, Any]:
        """Reclaim stuck items as failed and reconcile the integration's unfinished runs."""
        store = integrations.get_store()
        try:
            res = ops.advance_cursor(store, engine, config.integration_id, tenant=config.tenant,
                                     is_run_alive=run_alive_check(context.instance), log=context.log,
                                     progress=context.log.info)
        except (IntegrationsError, LookupError) as exc:
            raise _fail(exc) from None
        context.add_output_metadata({"reclaimed_items": len(res.reclaimed_items),
                                     "abandoned_items": len(res.abandoned_items), "runs_reconciled": len(res.runs),
                                     "cursor_before": _md(res.cursor_before), "cursor_after": _md(res.cursor_after)})
        _record(context, store, res.integration_id, "advance cursor", res.cursor_before, res.cursor_after)
        log_health_checks(context, store, engine, res.integration_id)
        return res.as_dict()

    @op(name="prune")
    def prune_op(context: OpExecutionContext, config: PruneConfig, integrations: IntegrationsResource) -> dict[str, Any]:
        """Delete old success/skipped item rows and request log rows; failed rows stay."""
        try:
            res = ops.prune(integrations.get_store(), days=config.days, tenant=config.tenant,
                            progress=context.log.info)
        except IntegrationsError as exc:
            raise _fail(exc) from None
        context.add_output_metadata(res.as_dict())
        return res.as_dict()

    @op(name="retry_mutations")
    def retry_mutations_op(context: OpExecutionContext, config: RetryMutationsConfig,
                           integrations: IntegrationsResource) -> dict[str, Any]:
        """Failed or conflicting mutations back to pending; the next push (sensor or cycle) sends them."""
        try:
            res = ops.retry_mutations(integrations.get_store(), mutation_ids=config.mutation_ids,
                                      integration_id=config.integration_id, tenant=config.tenant)
        except (IntegrationsError, LookupError) as exc:
            raise _fail(exc) from None
        context.add_output_metadata({"integration_id": res.integration_id, "retried": res.changed,
                                     "outbox": MetadataValue.json(res.outbox)})
        return res.as_dict()

    @op(name="skip_mutation")
    def skip_mutation_op(context: OpExecutionContext, config: SkipMutationConfig,
                         integrations: IntegrationsResource) -> dict[str, Any]:
        """Give up on a failed or conflicting mutation so the later mutations of its key are pushed."""
        try:
            res = ops.skip_mutation(integrations.get_store(), config.mutation_id, reason=config.reason,
                                    tenant=config.tenant)
        except (IntegrationsError, LookupError) as exc:
            raise _fail(exc) from None
        context.add_output_metadata({"integration_id": res.integration_id, "skipped": res.changed,
                                     "outbox": MetadataValue.json(res.outbox)})
        return res.as_dict()

    @job(name=RETRY_MUTATIONS_JOB, executor_def=in_process_executor, tags={"integrations/operator": "retry-mutations"},
         description="Put failed or conflicting outbox mutations back to pending (the next push sends them).")
    def retry_mutations_job() -> None:
        retry_mutations_op()

    @job(name=SKIP_MUTATION_JOB, executor_def=in_process_executor, tags={"integrations/operator": "skip-mutation"},
         description="Give up on a failed or conflicting outbox mutation (reason kept).")
    def skip_mutation_job() -> None:
        skip_mutation_op()

    @job(name=SKIP_JOB, executor_def=in_process_executor, tags={"integrations/operator": "skip"},
         description="Skip a failed sync item (reason kept) so the cursor can move on.")
    def skip_job() -> None:
        skip_item_op()

    @job(name=RETRY_JOB, executor_def=in_process_executor, tags={"integrations/operator": "retry"},
         description="Re-run an integration's failed items now (one attempt each). To re-run a failed sync "
         "run's chunks with their full retries instead, open that run and choose Re-execute from failure.")
    def retry_job() -> None:
        retry_failed_op()

    @job(name=ADVANCE_JOB, executor_def=in_process_executor, tags={"integrations/operator": "advance-cursor"},
         description="Reclaim items stuck in processing and reconcile an integration's runs so its cursor moves.")
    def advance_job() -> None:
        advance_op()

    @job(name=PRUNE_JOB, executor_def=in_process_executor, tags={"integrations/operator": "prune"},
         description="Delete success/skipped sync items and request log rows older than N days (default 30).")
    def prune_job() -> None:
        prune_op()

    schedule = ScheduleDefinition(
        name=PRUNE_SCHEDULE,
        job=prune_job,
        cron_schedule=PRUNE_CRON,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Daily prune with the default retention (30 days).",
    )
    return [skip_job, retry_job, advance_job, prune_job, retry_mutations_job, skip_mutation_job], [schedule]
