"""Health in the Dagster UI: two asset checks per integration partition of ``["integrations", "<key>"]``.

- ``no_failed_items_holding_cursor``: fails (ERROR) while the integration has failed items (they hold
  the cursor back); metadata carries the count and the oldest failed item's id, external id and error.
- ``synced_within_interval``: fails with ERROR while the integration is disabled or its health is
  ``failing``; fails with WARN when the integration is late by more than its interval (it was due at
  ``next_sync_at`` and that is more than one interval ago); passes otherwise.

The outcomes are pure functions of the integration row, its failed items and the time
(``evaluate_health``); ``health_check_evaluations`` turns them into Dagster ``AssetCheckEvaluation``
events for one partition. They are logged when a sync run reconciles (the chunk or reconcile step
that settled it) and by the operator jobs (skip, retry, advance cursor) after they act.

Dagster's ``AssetSpec`` takes no check specs, so the checks are declared by one ``@multi_asset_check``
per provider (``build_health_checks``); executing it from the UI re-evaluates every integration of
the provider from the state store and records one evaluation per partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from integrations_dagster.engine.health import DISABLED, FAILING

NO_FAILED_ITEMS = "no_failed_items_holding_cursor"
SYNCED_WITHIN_INTERVAL = "synced_within_interval"
CHECK_NAMES = (NO_FAILED_ITEMS, SYNCED_WITHIN_INTERVAL)
ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict for one integration. ``severity`` is ``ERROR`` or ``WARN`` (used when failing)."""

    name: str
    passed: bool
    severity: str
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def failed_items_outcome(failed_items: Sequence[dict[str, Any]]) -> CheckOutcome:
    """``no_failed_items_holding_cursor`` from the integration's failed item rows (any order)."""
    if not failed_items:
        return CheckOutcome(NO_FAILED_ITEMS, True, "ERROR", "no failed items hold the cursor",
                            {"failed_items": 0})
    oldest = min(failed_items, key=lambda r: r["id"])
    error = str(oldest.get("last_error") or "")
    if len(error) > ERROR_MAX_CHARS:
        error = error[: ERROR_MAX_CHARS - 3] + "..."
    n = len(failed_items)
    return CheckOutcome(
        NO_FAILED_ITEMS, False, "ERROR",
        f"{n} failed item(s) hold the cursor; oldest: item {oldest['id']} "
        f"(external id {oldest.get('external_id')}): {error}",
        {
            "failed_items": n,
            "oldest_failed_item_id": oldest["id"],
            "oldest_failed_external_id": str(oldest.get("external_id")),
            "oldest_failed_error": error,
            "oldest_failed_run_id": oldest.get("run_id"),
        },
    )


def interval_of(integration: Any, *, default_interval: int | None, now: datetime) -> timedelta | None:
    """The integration's healthy cadence: its interval, else the provider's default; for a cron
    schedule the gap between its next two fire times."""
    if integration.sync_cron:
        try:
            from integrations_dagster.engine.cron import next_cron_time

            first = next_cron_time(integration.sync_cron, now)
            return next_cron_time(integration.sync_cron, first) - first
        except Exception:  # an invalid cron falls back to the interval, as scheduling does
            pass
    minutes = integration.sync_interval_minutes or default_interval
    return timedelta(minutes=minutes) if minutes else None


def freshness_outcome(integration: Any, *, now: datetime, default_interval: int | None) -> CheckOutcome:
    """``synced_within_interval`` for one integration row at ``now``."""
    md: dict[str, Any] = {
        "health": integration.health,
        "enabled": bool(integration.enabled),
        "last_synced_at": _iso(integration.last_synced_at),
        "next_sync_at": _iso(integration.next_sync_at),
        "last_run_status": integration.last_run_status,
        "consecutive_failures": integration.consecutive_failures,
    }
    name = SYNCED_WITHIN_INTERVAL
    if not integration.enabled or integration.health == DISABLED:
        return CheckOutcome(name, False, "ERROR",
                            f"disabled: {integration.disabled_reason or 'no reason given'}", md)
    if integration.health == FAILING:
        return CheckOutcome(name, False, "ERROR",
                            f"health is failing after {integration.consecutive_failures} unsuccessful run(s) "
                            f"in a row (last run {integration.last_run_status})", md)
    interval = interval_of(integration, default_interval=default_interval, now=now)
    if interval is None:
        return CheckOutcome(name, True, "WARN", "no interval or cron: not scheduled, never late", md)
    md["interval_minutes"] = round(interval.total_seconds() / 60, 3)
    due = integration.next_sync_at
    if due is None:
        base = integration.last_synced_at or integration.created_at
        due = base + interval if integration.last_synced_at is not None else base
    if due is None:
        return CheckOutcome(name, True, "WARN", "not scheduled yet", md)
    late = now - due
    md["late_seconds"] = max(0, round(late.total_seconds()))
    if late > interval:
        return CheckOutcome(name, False, "WARN",
                            f"late: due at {due.isoformat()}, more than its interval "
                            f"({md['interval_minutes']} min) ago", md)
    last = integration.last_synced_at
    return CheckOutcome(name, True, "WARN",
                        f"synced at {last.isoformat()}" if last else "not synced yet, not late", md)


def evaluate_health(
    integration: Any, failed_items: Sequence[dict[str, Any]], *, now: datetime, default_interval: int | None
) -> list[CheckOutcome]:
    """Both checks for one integration (pure)."""
    return [failed_items_outcome(failed_items),
            freshness_outcome(integration, now=now, default_interval=default_interval)]


def evaluate_for(store: Any, engine: Any, integration_id: int, *, now: datetime | None = None) -> tuple[Any, list[CheckOutcome]]:
    """Read one integration and its failed items from ``store`` and evaluate both checks."""
    integ = store.get_integration(integration_id, decrypt=False)
    provider = engine.providers.get(integ.provider_key)
    outcomes = evaluate_health(
        integ, store.failed_items(integration_id=integration_id),
        now=now or engine.clock(), default_interval=provider.default_sync_interval if provider else None,
    )
    return integ, outcomes


# --- Dagster ----------------------------------------------------------------------------------------
def check_specs(provider_key: str) -> list[Any]:
    from dagster import AssetCheckSpec

    from integrations_dagster.orchestration.definitions import asset_key

    return [
        AssetCheckSpec(NO_FAILED_ITEMS, asset=asset_key(provider_key),
                       description="Fails while failed items hold the integration's cursor back (count and the "
                       "oldest failed item in the metadata). Updated when a run reconciles and when an "
                       "operator skips or retries."),
        AssetCheckSpec(SYNCED_WITHIN_INTERVAL, asset=asset_key(provider_key),
                       description="Warns when the integration is late by more than its interval; fails when it "
                       "is disabled or its health is failing."),
    ]


def to_evaluations(provider_key: str, integration_id: int, outcomes: Iterable[CheckOutcome]) -> list[Any]:
    """``AssetCheckEvaluation`` events for partition ``integration_id``."""
    from dagster import AssetCheckEvaluation, AssetCheckSeverity

    from integrations_dagster.orchestration.definitions import asset_key

    key = asset_key(provider_key)
    return [
        AssetCheckEvaluation(
            asset_key=key, check_name=o.name, passed=o.passed, partition=str(integration_id),
            severity=AssetCheckSeverity.WARN if o.severity == "WARN" else AssetCheckSeverity.ERROR,
            description=o.description, metadata={k: v for k, v in o.metadata.items() if v is not None},
        )
        for o in outcomes
    ]


def health_check_evaluations(store: Any, engine: Any, integration_id: int) -> list[Any]:
    integ, outcomes = evaluate_for(store, engine, integration_id)
    return to_evaluations(integ.provider_key, integration_id, outcomes)


def log_health_checks(context: Any, store: Any, engine: Any, integration_id: int) -> None:
    """Log both checks for one integration from an op; never fails the op."""
    try:
        for ev in health_check_evaluations(store, engine, integration_id):
            context.log_event(ev)
    except Exception as exc:  # health in the UI is a view: it must not break a sync or an operator action
        context.log.warning(f"could not record the health checks of integration {integration_id}: {exc}")


def record_health_checks(instance: Any, store: Any, engine: Any, integration_id: int) -> None:
    """Record both checks for one integration outside a run (``instance.report_runless_asset_event``)."""
    for ev in health_check_evaluations(store, engine, integration_id):
        instance.report_runless_asset_event(ev)


def build_health_checks(provider_key: str, engine: Any) -> Any:
    """The ``@multi_asset_check`` declaring both checks on the provider's asset; executing it from the UI
    re-evaluates every integration of the provider and records one evaluation per partition."""
    from dagster import AssetCheckResult, AssetCheckSeverity, multi_asset_check

    @multi_asset_check(name=f"{provider_key}_health_checks", specs=check_specs(provider_key),
                       required_resource_keys={"integrations"},
                       description=f"Re-evaluate the health checks of every {provider_key} integration.")
    def health_checks(context):  # type: ignore[no-untyped-def]
        store = context.resources.integrations.get_store()
        totals = {name: 0 for name in CHECK_NAMES}
        from integrations_dagster.orchestration.dagster_storage import dynamic_partition_keys
        from integrations_dagster.orchestration.definitions import partitions_name

        existing = set(dynamic_partition_keys(context.instance, partitions_name(provider_key)))
        ids = [i for i in store.integration_ids(provider_key) if str(i) in existing]  # a check needs its partition
        for integration_id in ids:
            _, outcomes = evaluate_for(store, engine, integration_id)
            for ev in to_evaluations(provider_key, integration_id, outcomes):
                context.op_execution_context.log_event(ev)
            for o in outcomes:
                totals[o.name] += 0 if o.passed else 1
        from integrations_dagster.orchestration.definitions import asset_key

        for name in CHECK_NAMES:
            yield AssetCheckResult(
                asset_key=asset_key(provider_key), check_name=name, passed=totals[name] == 0,
                severity=AssetCheckSeverity.ERROR,
                description=f"{totals[name]} of {len(ids)} integration(s) fail this check",
                metadata={"integrations": len(ids), "failing": totals[name]},
            )

    return health_checks


# --- the health sensor: CLI actions outside Dagster, and lateness as time passes ---------------------
HEALTH_SENSOR = "integrations_health_checks_sensor"


def fingerprint(integration: Any, failed_items: Sequence[dict[str, Any]], outcomes: Sequence[CheckOutcome]) -> str:
    """Changes whenever a verdict, the failed items or the integration's health change (pure)."""
    import hashlib
    import json

    # Not updated_at (nor the sync times): every sync changes them, and re-recording every synced
    # integration's unchanged verdicts each tick would cost two Dagster events per sync.
    data = [
        integration.health, bool(integration.enabled), integration.consecutive_failures, integration.last_run_status,
        len(failed_items), min((r["id"] for r in failed_items), default=None),
        [(o.name, o.passed, o.severity) for o in outcomes],
    ]
    return hashlib.sha1(json.dumps(data, default=str).encode()).hexdigest()[:12]


def changed_evaluations(
    integrations: Sequence[Any],
    failed_items: Sequence[dict[str, Any]],
    *,
    previous: dict[str, str],
    now: datetime,
    default_intervals: dict[str, int | None],
    partitions: dict[str, set[str]],
    limit: int | None = None,
) -> tuple[list[tuple[Any, list[CheckOutcome]]], dict[str, str]]:
    """Which integrations need new check evaluations since ``previous`` fingerprints (pure).

    Only integrations of known providers whose partition exists are evaluated (a check needs its
    partition; the first run adds it). Returns the (integration, outcomes) to record and the new
    fingerprints.

    ``limit``: at most that many integrations to record now, those with a failing verdict first (then in
    the order given). Every other changed integration keeps its previous fingerprint (none if it had
    none), so it is changed again on the next tick and recorded then: deferred, never lost.
    """
    by_integration: dict[int, list[dict[str, Any]]] = {}
    for row in failed_items:
        by_integration.setdefault(row["integration_id"], []).append(row)
    changed: list[tuple[Any, list[CheckOutcome]]] = []
    current: dict[str, str] = {}
    for integ in integrations:
        if integ.provider_key not in default_intervals or str(integ.id) not in partitions.get(integ.provider_key, set()):
            continue
        failed = by_integration.get(integ.id, [])
        outcomes = evaluate_health(integ, failed, now=now, default_interval=default_intervals[integ.provider_key])
        fp = fingerprint(integ, failed, outcomes)
        current[str(integ.id)] = fp
        if previous.get(str(integ.id)) != fp:
            changed.append((integ, outcomes))
    if limit is not None and len(changed) > limit:
        changed.sort(key=lambda pair: all(o.passed for o in pair[1]))  # stable: failing verdicts first
        for integ, _ in changed[limit:]:
            key = str(integ.id)
            if key in previous:
                current[key] = previous[key]
            else:
                del current[key]
        changed = changed[:limit]
    return changed, current


def build_health_sensor(engine: Any, *, minimum_interval_seconds: int = 60, running: bool = True,
                        max_integrations_per_tick: int | None = 250) -> Any:
    """One sensor that re-evaluates the health checks of every integration each tick and records the
    ones whose verdict or state changed: it catches operator actions done outside Dagster (the CLI's
    ``skip-sync-item``, ``retry-item``, ``advance-cursor``, ``enable``/``disable``) and an integration
    becoming late. Two queries per tick (integrations, failed items) plus one per provider for its
    partitions; the cursor keeps one short fingerprint per integration.

    At most ``max_integrations_per_tick`` integrations are recorded per tick (``changed_evaluations``'s
    ``limit``): the daemon writes each returned check evaluation as its own runless event (with
    dagster-postgres a new PostgreSQL connection each), and a first tick over 2,000 integrations
    returned 4,000 of them, which held the daemon's sensor thread (and so every sync sensor behind it)
    for about four minutes (docs/BENCHMARKS.md, Fleet)."""
    import json

    from dagster import DefaultSensorStatus, SensorResult, SkipReason, sensor

    from integrations_dagster.orchestration.dagster_storage import dynamic_partition_keys
    from integrations_dagster.orchestration.definitions import partitions_name

    @sensor(
        name=HEALTH_SENSOR, minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        required_resource_keys={"integrations"},
        description="Records the integrations' health checks when they change outside a sync run "
        "(CLI operator actions, an integration becoming late).",
    )
    def health_sensor(context):  # type: ignore[no-untyped-def]
        store = context.resources.integrations.get_store()
        previous = json.loads(context.cursor) if context.cursor else {}
        keys = list(engine.providers)
        partitions = {k: set(dynamic_partition_keys(context.instance, partitions_name(k))) for k in keys}
        changed, current = changed_evaluations(
            store.list_integrations(), store.failed_items(), previous=previous, now=engine.clock(),
            default_intervals={k: p.default_sync_interval for k, p in engine.providers.items()},
            partitions=partitions, limit=max_integrations_per_tick,
        )
        events = [ev for integ, outcomes in changed for ev in to_evaluations(integ.provider_key, integ.id, outcomes)]
        if not events and current == previous:
            return SkipReason("no health check changed")
        return SensorResult(asset_events=events, cursor=json.dumps(current, sort_keys=True))

    return health_sensor
