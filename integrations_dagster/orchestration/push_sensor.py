"""The push sensor (issue 13): push soon after a local write, without a job per write.

One sensor per provider that pushes, ``<key>_push_sensor``. Each tick (every
``push_sensor_interval_seconds``):

1. one query finds the enabled integrations of the provider with pending mutations
   (``Outbox.pending_for_provider``; the in-flight check is ``store.schedule.in_flight_for``);
2. an integration whose job has a queued or running Dagster run, or a sync run in flight in our
   database, is left alone: a push never overlaps a running cycle (the run's own push, or the next
   tick, takes the mutations);
3. an integration pushed less than ``auto_sync_throttle`` seconds ago is left for a later tick: rapid
   local writes coalesce into one push run (Tether's ``auto_sync_throttle``, which uses a unique job
   lock for the same purpose); the time of each integration's last request is the sensor's cursor;
4. the others get one ``<key>_sync`` run each with tag ``integrations/direction=push`` (push-only,
   so inbound snapshots cause no feedback loop, as in the seed) and trigger ``outbox``.

Partitions that do not exist yet (an integration added since the sync sensor's last tick) are added
by the same tick.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

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

from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.orchestration.dagster_storage import dynamic_partition_keys
from integrations_dagster.orchestration.definitions import (
    ALIVE_STATUSES,
    DIRECTION_TAG,
    INTEGRATION_TAG,
    PROVIDER_TAG,
    TRIGGER_TAG,
    job_name,
    partitions_name,
)
from integrations_dagster.orchestration.resource import IntegrationsResource
from integrations_dagster.settings import SyncSettings
from integrations_dagster.store import Store, as_utc
from integrations_dagster.store.outbox import Outbox
from integrations_dagster.store.schedule import in_flight_for

OUTBOX_TRIGGER = "outbox"


def push_sensor_name(provider_key: str) -> str:
    return f"{provider_key}_push_sensor"


def _parse_cursor(raw: str | None) -> dict[str, float]:
    try:
        data = json.loads(raw) if raw else {}
        return {str(k): float(v) for k, v in (data.get("last_push") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def evaluate_push_tick(
    context: SensorEvaluationContext, *, store: Store, provider: Provider, engine: SyncEngine, throttle: float
) -> SensorResult:
    key = provider.key
    now = as_utc(engine.clock())
    stamp = now.timestamp()
    last_push = _parse_cursor(context.cursor)
    pending = Outbox(store).pending_for_provider(key)
    # forget integrations whose throttle window is over (keeps the cursor small)
    last_push = {k: v for k, v in last_push.items() if stamp - v < throttle}
    if not pending:
        return SensorResult(skip_message="no pending mutations", cursor=json.dumps({"last_push": last_push}))
    in_flight = in_flight_for(store, pending)
    alive: dict[str, DagsterRun] = {}
    for run in context.instance.get_runs(RunsFilter(job_name=job_name(key), statuses=list(ALIVE_STATUSES))):
        part = run.tags.get("dagster/partition") or run.tags.get(INTEGRATION_TAG)
        if part is not None:
            alive.setdefault(part, run)
    existing = set(dynamic_partition_keys(context.instance, partitions_name(key)))
    missing = [str(i) for i in pending if str(i) not in existing]
    requests: list[RunRequest] = []
    for iid in pending:
        sid = str(iid)
        if sid in alive:
            context.log.info(f"integration {iid}: pending mutations wait, Dagster run {alive[sid].run_id} is "
                             f"{alive[sid].status.value.lower()}")
            continue
        if iid in in_flight:
            context.log.info(f"integration {iid}: pending mutations wait, sync run {in_flight[iid].id} is "
                             f"{in_flight[iid].status}")
            continue
        if sid in last_push:
            context.log.info(f"integration {iid}: coalesced, pushed {stamp - last_push[sid]:.1f} s ago "
                             f"(auto_sync_throttle {throttle:g} s)")
            continue
        requests.append(RunRequest(
            partition_key=sid,
            run_key=f"push:{iid}:{datetime.fromtimestamp(stamp, UTC).isoformat()}",
            tags={"dagster/partition": sid, "dagster/partition_set": f"{job_name(key)}_partition_set",
                  PROVIDER_TAG: key, INTEGRATION_TAG: sid, TRIGGER_TAG: OUTBOX_TRIGGER, DIRECTION_TAG: "push"},
        ))
        last_push[sid] = stamp
    partitions = DynamicPartitionsDefinition(name=partitions_name(key))
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[partitions.build_add_request(missing)] if missing else [],
        cursor=json.dumps({"last_push": last_push}),
        skip_message=None if requests else f"{len(pending)} integration(s) with pending mutations wait",
    )


def build_push_sensor(*, provider: Provider, engine: SyncEngine, settings: SyncSettings,
                      default_status: DefaultSensorStatus) -> SensorDefinition:
    key = provider.key
    throttle = float(settings.auto_sync_throttle)

    @sensor(
        name=push_sensor_name(key),
        job_name=job_name(key),
        minimum_interval_seconds=settings.push_sensor_interval_seconds,
        default_status=default_status,
        description=(f"Requests a push-only {job_name(key)} run for each {key} integration with pending outbox "
                     f"mutations, at most one per {throttle:g} s (auto_sync_throttle), never while a run of that "
                     "integration is queued or in flight."),
    )
    def _push_sensor(context: SensorEvaluationContext, integrations: IntegrationsResource) -> SensorResult:
        return evaluate_push_tick(context, store=integrations.get_store(), provider=provider, engine=engine,
                                  throttle=throttle)

    return _push_sensor


def build_push_sensors(*, engine: SyncEngine, settings: SyncSettings) -> Sequence[SensorDefinition]:
    status = DefaultSensorStatus.RUNNING if settings.sensor_default_running else DefaultSensorStatus.STOPPED
    return [build_push_sensor(provider=p, engine=engine, settings=settings, default_status=status)
            for p in engine.providers.values() if p.supports_push()]
