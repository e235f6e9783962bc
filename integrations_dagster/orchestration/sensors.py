"""Per-provider sync sensors: the seed's ``integrations:sync`` command, as Dagster sensors.

One sensor per provider, ``<key>_sync_sensor``. Each tick returns one ``SensorResult`` that

1. keeps the provider's dynamic partitions equal to its integrations (one query of ids, compared with
   ``instance.get_dynamic_partitions``; new ids added, deleted ones removed);
2. finds the due integrations with one indexed query (``provider_key``, ``enabled``,
   ``next_sync_at <= now``; ``ix_integrations_due``), in ``(next_sync_at, id)`` order, at most
   ``sensor_max_runs_per_tick`` rows, starting after the position stored in the sensor cursor;
3. skips the ones whose previous run is still in flight: one ``instance.get_runs`` query for the
   sync job's queued/running runs plus one query of ``sync_runs`` in ``enumerating``/``processing``
   (a sync run whose Dagster run is known to be over is abandoned, not in flight: the next run's
   ``start_run`` cleans it up, exactly as the engine decides), and says so in the tick log;
4. requests one run per remaining integration, ``run_key = "<id>:<next_sync_at ISO>"``, so that two
   ticks that saw the same state never launch the same sync twice;
5. claims the requested integrations: ``next_sync_at`` moves to ``now + interval x multiplier`` (one
   UPDATE), so a run that is lost before it reconciles (cancelled while queued, a crashed run
   worker) is retried at the normal cadence under a new run key instead of being de-duplicated
   forever; reconciliation then sets the real next time.

The cursor (a pydantic model stored as JSON) records the last ``(next_sync_at, id)`` examined when a
tick was full, so the next tick continues after it; a tick that reaches the end of the due list
starts over from the beginning next time. A cursor that cannot be read is ignored (logged).

The query count of a tick is constant: 4 on our database (ids, due, in-flight sync runs, claim; one
more, the last enumerated sizes, when batching) and 2 on Dagster's (dynamic partitions, in-flight
runs), whatever the number of integrations. The SQL is ``store.schedule`` (``read_sync_tick``,
``claim_due``); this module decides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    DagsterRun,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.engine.fleet import DueIntegration, TickPlan, batch_run_key, plan_tick
from integrations_dagster.engine.health import claim_next
from integrations_dagster.orchestration.dagster_storage import dynamic_partition_keys
from integrations_dagster.orchestration.definitions import (
    ALIVE_STATUSES,
    INTEGRATION_TAG,
    PROVIDER_TAG,
    TRIGGER_TAG,
    job_name,
    partitions_name,
)
from integrations_dagster.orchestration.resource import IntegrationsResource
from integrations_dagster.settings import SyncSettings
from integrations_dagster.status import RunStatus
from integrations_dagster.store import Store, as_utc
from integrations_dagster.store.schedule import DueRow, InFlightRun, claim_due, read_sync_tick

PARTITION_TAG = "dagster/partition"
PARTITION_SET_TAG = "dagster/partition_set"
SCHEDULE_TRIGGER = "schedule"
#: skipped integrations named one by one in a tick's log (the rest are counted)
SKIP_LINES = 20


def sensor_name(provider_key: str) -> str:
    return f"{provider_key}_sync_sensor"


def run_key_for(integration_id: int, next_sync_at: datetime) -> str:
    """``"<id>:<next_sync_at as UTC ISO-8601>"``: the same due time always gives the same key."""
    return f"{integration_id}:{as_utc(next_sync_at).astimezone(UTC).isoformat()}"


class SyncSensorCursor(BaseModel):
    """Where the last full tick stopped in the ``(next_sync_at, id)`` order of due integrations."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    after_next_sync_at: datetime | None = None
    after_id: int | None = None

    @property
    def at_start(self) -> bool:
        return self.after_next_sync_at is None or self.after_id is None

    @classmethod
    def parse(cls, raw: str | None) -> tuple[SyncSensorCursor, str | None]:
        """The stored cursor, or a fresh one and the reason when it cannot be read."""
        if not raw:
            return cls(), None
        try:
            cursor = cls.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            return cls(), f"ignoring unreadable sensor cursor {raw[:200]!r}: {type(exc).__name__}"
        if cursor.version != 1:
            return cls(), f"ignoring sensor cursor of unknown version {cursor.version}"
        return cursor, None

    def serialize(self) -> str:
        return self.model_dump_json()


@dataclass
class TickReport:
    """What one tick decided (for logs, tests and the benchmark)."""

    now: datetime
    due: list[int] = field(default_factory=list)
    requested: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    added_partitions: list[str] = field(default_factory=list)
    deleted_partitions: list[str] = field(default_factory=list)
    cursor: SyncSensorCursor = field(default_factory=SyncSensorCursor)
    #: the shards sent to ``<key>_sync_batch`` runs (their ids are also in ``requested``)
    batches: list[list[int]] = field(default_factory=list)
    #: the integrations that got their own ``<key>_sync`` run
    own_runs: list[int] = field(default_factory=list)


def evaluate_sync_tick(
    context: SensorEvaluationContext,
    *,
    store: Store,
    provider: Provider,
    engine: SyncEngine,
    max_runs: int,
    batching: bool = False,
) -> tuple[SensorResult, TickReport]:
    """One tick of ``provider``'s sync sensor (see the module docstring). With ``batching`` (the sensor
    also targets ``<key>_sync_batch``) small due integrations are sharded into batch runs."""
    key = provider.key
    log = context.log
    now = as_utc(engine.clock())
    cursor, problem = SyncSensorCursor.parse(context.cursor)
    if problem:
        log.warning(problem)
    report = TickReport(now=now)
    partitions = DynamicPartitionsDefinition(name=partitions_name(key))

    # 1. partitions == integrations; 2. due integrations, one page after the cursor; 3b. our own
    # in-flight runs of those (store.schedule: one connection, constant query count)
    settings = engine.settings
    batching = batching and settings.batch_size > 0
    limit = max(settings.sensor_max_integrations_per_tick, max_runs) if batching else max_runs
    after = None
    if cursor.after_next_sync_at is not None and cursor.after_id is not None:
        after = (cursor.after_next_sync_at, cursor.after_id)
    tick = read_sync_tick(
        store, key, now=now, limit=limit, after=after,
        scheduled_only=provider.default_sync_interval is None, with_sizes=batching,
    )
    ids = {str(x) for x in tick.integration_ids}
    rows = tick.due
    fetched_full = len(rows) >= limit
    due_ids = [r.id for r in rows]
    sizes = tick.last_sizes
    in_flight_sync = tick.in_flight

    existing = set(dynamic_partition_keys(context.instance, partitions_name(key)))
    report.added_partitions = sorted(ids - existing, key=_int_order)
    report.deleted_partitions = sorted(existing - ids, key=_int_order)
    requests_for_partitions: list[Any] = []
    if report.added_partitions:
        requests_for_partitions.append(partitions.build_add_request(report.added_partitions))
    if report.deleted_partitions:
        requests_for_partitions.append(partitions.build_delete_request(report.deleted_partitions))

    # 3a. Dagster runs of this provider's sync jobs (partitioned and batch) that are queued or running:
    # one query (both jobs carry the provider tag); a batch run's members are in its run config
    alive_runs: dict[str, DagsterRun] = {}
    alive_run_ids: set[str] = set()
    if due_ids:
        from integrations_dagster.orchestration.batch import batch_job_name, batch_members

        for run in context.instance.get_runs(RunsFilter(tags={PROVIDER_TAG: key}, statuses=list(ALIVE_STATUSES))):
            if run.job_name == batch_job_name(key):
                alive_run_ids.add(run.run_id)
                for member in batch_members(key, run.run_config):
                    alive_runs.setdefault(str(member), run)
                continue
            if run.job_name != job_name(key):
                continue
            from integrations_dagster.orchestration.definitions import fail_if_owner_dead

            if fail_if_owner_dead(context.instance, run):  # its process is gone: not in flight
                continue
            alive_run_ids.add(run.run_id)
            part = run.tags.get(PARTITION_TAG) or run.tags.get(INTEGRATION_TAG)
            if part is not None:
                alive_runs.setdefault(part, run)

    stale_before = now - timedelta(seconds=engine.settings.job_timeout)
    run_requests: list[RunRequest] = []
    claims: list[tuple[int, datetime]] = []
    report.due = due_ids
    eligible: list[DueRow] = []
    for row in rows:
        iid = row.id
        dagster_run = alive_runs.get(str(iid))
        if dagster_run is not None:
            report.skipped[iid] = (
                f"integration {iid}: skipped, Dagster run {dagster_run.run_id} is still "
                f"{dagster_run.status.value.lower()}"
            )
            continue
        sync_run = in_flight_sync.get(iid)
        if sync_run is not None:
            reason = _in_flight_reason(iid, sync_run, alive_run_ids, stale_before)
            if reason is not None:
                report.skipped[iid] = reason
                continue
            log.info(
                f"integration {iid}: sync run {sync_run.id} ({sync_run.status}) was abandoned by Dagster run "
                f"{sync_run.dagster_run_id}; the new run cleans it up"
            )
        eligible.append(row)

    # 4. own runs and batch shards (a pure decision: engine.fleet.plan_tick)
    candidates = [DueIntegration(id=r.id, next_sync_at=r.next_sync_at, last_items=sizes.get(r.id))
                  for r in eligible]
    if batching:
        plan = plan_tick(candidates, batch_size=settings.batch_size, big_items=settings.batch_max_items,
                         max_own_runs=max_runs)
    else:
        plan = TickPlan(own_runs=[c.id for c in candidates[:max_runs]], taken=min(len(candidates), max_runs))
    due_of = {c.id: c for c in candidates}
    placed = set(plan.own_runs) | set(plan.batched)
    stopped_early = plan.taken < len(candidates)
    for row in eligible:
        iid = row.id
        if iid not in placed:
            continue
        if iid in plan.own_runs:
            run_requests.append(_own_run_request(key, iid, row.next_sync_at, batching))
            report.own_runs.append(iid)
        report.requested.append(iid)
        claim = claim_next(
            row, now=now, default_interval=provider.default_sync_interval,
            multiplier=engine.health.multiplier(row.health), from_due=settings.schedule_from == "due",
        ) or now + timedelta(seconds=engine.settings.job_timeout)
        claims.append((iid, claim))
    if plan.batches:
        from integrations_dagster.orchestration.batch import BATCH_SIZE_TAG, batch_job_name, batch_run_config

        for members in plan.batches:
            run_requests.append(RunRequest(
                job_name=batch_job_name(key),
                run_key=batch_run_key([due_of[i] for i in members]),
                run_config=batch_run_config(key, members),
                tags={PROVIDER_TAG: key, TRIGGER_TAG: SCHEDULE_TRIGGER, BATCH_SIZE_TAG: str(len(members))},
            ))
            report.batches.append(list(members))

    # 5. claim what was requested (only rows that are still due: never clobber a fresh reconcile)
    claim_due(store, claims, now=now)

    lines = list(report.skipped.values())
    for line in lines[:SKIP_LINES]:
        log.info(line)
    if len(lines) > SKIP_LINES:  # a live batch run holds hundreds: the first lines say which run
        log.info(f"... and {len(lines) - SKIP_LINES} more integrations skipped in flight")
    if stopped_early:
        # the plan stopped at the own-run cap: continue after the last integration it placed
        last = candidates[plan.taken - 1] if plan.taken else None
        report.cursor = (SyncSensorCursor(after_next_sync_at=last.next_sync_at, after_id=last.id) if last
                         else cursor)
    elif fetched_full:
        last_row = rows[-1]
        report.cursor = SyncSensorCursor(after_next_sync_at=last_row.next_sync_at, after_id=last_row.id)
    else:
        report.cursor = SyncSensorCursor()
    return _finish(key, log, report, run_requests, requests_for_partitions, due_ids)


def _own_run_request(key: str, iid: int, next_at: datetime, batching: bool) -> RunRequest:
    return RunRequest(
                job_name=job_name(key) if batching else None,
                partition_key=str(iid),
                run_key=run_key_for(iid, next_at),
                # The partition tags are set here, already resolved: the partition exists (or is
                # added by this same result), and Dagster would otherwise check each request's
                # partition with its own queries (about 2 per request).
                tags={
                    PARTITION_TAG: str(iid),
                    PARTITION_SET_TAG: f"{job_name(key)}_partition_set",
                    PROVIDER_TAG: key,
                    INTEGRATION_TAG: str(iid),
                    TRIGGER_TAG: SCHEDULE_TRIGGER,
                },
            )


def _finish(key: str, log: logging.Logger, report: TickReport, run_requests: list[RunRequest],
            requests_for_partitions: list[Any], due_ids: list[int]) -> tuple[SensorResult, TickReport]:
    batched = sum(len(b) for b in report.batches)
    log.info(
        f"{key}: {len(due_ids)} due, {len(report.requested)} requested, {len(report.skipped)} skipped in flight"
        + (f" ({len(report.own_runs)} own runs, {batched} in {len(report.batches)} batch runs)"
           if report.batches else "")
        + (f", +{len(report.added_partitions)}/-{len(report.deleted_partitions)} partitions"
           if report.added_partitions or report.deleted_partitions else "")
        + ("" if report.cursor.at_start else f"; page full, next tick continues after integration "
                                              f"{report.cursor.after_id}")
    )
    skip_message = None
    if not run_requests:
        skip_message = (f"{len(report.skipped)} due integration(s) still in flight" if report.skipped
                        else "no integration is due")
    return (
        SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=requests_for_partitions,
            cursor=report.cursor.serialize(),
            skip_message=skip_message,
        ),
        report,
    )


def _in_flight_reason(iid: int, run: InFlightRun, alive_run_ids: set[str], stale_before: datetime) -> str | None:
    """Why ``run`` still counts as in flight, or None when the engine would treat it as abandoned.

    Mirrors ``SyncEngine.start_run``: an enumeration whose Dagster run is over (or that is older
    than ``job_timeout``) is abandoned; so is a processing run whose Dagster run is over.
    """
    if run.dagster_run_id is None:
        alive = None
    else:
        alive = run.dagster_run_id in alive_run_ids
    stale = run.started_at < stale_before
    if run.status == RunStatus.ENUMERATING and (alive is False or stale):
        return None
    if run.status == RunStatus.PROCESSING and alive is False:
        return None
    return (
        f"integration {iid}: skipped, sync run {run.id} is still {run.status}"
        + (f" (Dagster run {run.dagster_run_id})" if run.dagster_run_id else "")
    )


def _int_order(value: str) -> tuple[int, str]:
    try:
        return (int(value), value)
    except ValueError:
        return (0, value)


def build_sync_sensor(
    *,
    provider: Provider,
    engine: SyncEngine,
    name: str | None = None,
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    max_runs_per_tick: int = 100,
    jobs: Sequence[Any] = (),
) -> SensorDefinition:
    """The sync sensor of one provider: requests a ``<key>_sync`` run per due integration; given ``jobs``
    (the provider's ``<key>_sync`` and ``<key>_sync_batch`` job definitions) it also shards small due
    integrations into batch runs (``engine.fleet.plan_tick``)."""
    key = provider.key
    batching = len(jobs) > 1
    target: dict[str, Any] = {"jobs": list(jobs)} if batching else {"job_name": job_name(key)}

    @sensor(
        name=name or sensor_name(key),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Requests a {job_name(key)} run for every {key} integration whose next_sync_at has passed "
            f"(at most {max_runs_per_tick} per tick)"
            + (f", or groups small ones into {key}_sync_batch runs" if batching else "")
            + ", skipping integrations whose previous run is still in flight, and keeps the partitions "
            "equal to the integrations."
        ),
        **target,
    )
    def _sync_sensor(context: SensorEvaluationContext, integrations: IntegrationsResource) -> SensorResult:
        result, _ = evaluate_sync_tick(
            context, store=integrations.get_store(), provider=provider, engine=engine, max_runs=max_runs_per_tick,
            batching=batching,
        )
        return result

    return _sync_sensor


def build_sync_sensors(
    *, engine: SyncEngine, settings: SyncSettings, jobs: dict[str, Any] | None = None
) -> Sequence[SensorDefinition]:
    """One ``<key>_sync_sensor`` per provider, configured by ``settings`` (called by ``build_definitions``;
    ``jobs`` by name: with a provider's ``<key>_sync_batch`` there and ``batch_size`` > 0, it batches)."""
    from integrations_dagster.orchestration.batch import batch_job_name

    status = DefaultSensorStatus.RUNNING if settings.sensor_default_running else DefaultSensorStatus.STOPPED
    jobs = jobs or {}
    out = []
    for p in engine.providers.values():
        pair = [jobs.get(job_name(p.key)), jobs.get(batch_job_name(p.key))]
        targets = pair if settings.batch_size > 0 and all(j is not None for j in pair) else []
        out.append(build_sync_sensor(
            provider=p,
            engine=engine,
            minimum_interval_seconds=settings.sensor_interval_seconds,
            default_status=status,
            max_runs_per_tick=settings.sensor_max_runs_per_tick,
            jobs=targets,
        ))
    return out
