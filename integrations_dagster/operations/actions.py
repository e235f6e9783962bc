"""Operator actions as plain functions over a ``Store`` and a ``SyncEngine``.

Both the ``integrations`` CLI and the Dagster operator jobs (``_operator_jobs``) call these, so the
rules live in one place. Every function that takes ``tenant`` scopes by it: with a tenant, an id that
belongs to another tenant raises exactly the same ``IntegrationNotFound`` / ``SyncItemNotFound`` as a
missing id, for reads and writes alike. ``tenant=None`` means "every tenant" (the operator's view).

Nothing here returns or logs a credential value: integrations are read without decrypting them, and
``has_credentials`` only says whether some are stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.integration import Integration
from integrations_dagster.engine.cron import validate_cron
from integrations_dagster.engine.supersede import Version, supersede
from integrations_dagster.errors import CredentialsError, IntegrationNotFound, IntegrationsError
from integrations_dagster.security.secrets import CredentialCipher
from integrations_dagster.status import UNFINISHED, ItemStatus, run_summary
from integrations_dagster.store import Store, as_utc, utcnow
from integrations_dagster.store import operator as op_sql
from integrations_dagster.store.store import chunked

if TYPE_CHECKING:  # the engine (and httpx, the listeners' machinery) loads only for verbs that run items
    from integrations_dagster.engine.engine import ReconcileResult, RunAliveCheck, SyncEngine

log_default = logging.getLogger("integrations_dagster.operations")

Progress = Callable[[str], None]

DEFAULT_PRUNE_DAYS = 30
DEFAULT_SKIP_REASON = "skipped by an operator"


def _noop(_: str) -> None:
    return None


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value is not None else None


# --- integrations ------------------------------------------------------------------------------
def integration_dict(integ: Integration, *, has_credentials: bool) -> dict[str, Any]:
    """The stable JSON shape of an integration (documented in docs/OPERATIONS.md). No secrets."""
    return {
        "id": integ.id,
        "tenant": integ.tenant,
        "provider": integ.provider_key,
        "name": integ.name,
        "metadata": integ.metadata,
        "has_credentials": has_credentials,
        "enabled": integ.enabled,
        "health": integ.health,
        "disabled_reason": integ.disabled_reason,
        "interval_minutes": integ.sync_interval_minutes,
        "cron": integ.sync_cron,
        "cursor": integ.cursor,
        "consecutive_failures": integ.consecutive_failures,
        "last_synced_at": iso(integ.last_synced_at),
        "next_sync_at": iso(integ.next_sync_at),
        "last_run_status": integ.last_run_status,
        "created_at": iso(integ.created_at),
        "updated_at": iso(integ.updated_at),
    }


def _credential_flags(store: Store, ids: Sequence[int]) -> dict[int, bool]:
    return op_sql.credential_flags(store, ids)


def add_integration(
    store: Store,
    *,
    engine: SyncEngine | None,
    provider_key: str,
    name: str,
    metadata: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    interval_minutes: int | None = None,
    cron: str | None = None,
    tenant: str | None = None,
) -> Integration:
    """Create an integration (due at once). The provider must be one the engine knows, and its metadata
    and credentials must match the provider's ``metadata_model`` / ``credentials_model``."""
    if not name or not name.strip():
        raise IntegrationsError("an integration needs a non-empty name")
    if engine is not None:
        # UnknownProvider names the known ones; InvalidIntegrationConfig names each missing or wrong field
        engine.provider(provider_key).validate_config(metadata or {}, credentials or {}, name=name.strip())
    if interval_minutes is not None and cron is not None:
        raise IntegrationsError("give either an interval or a cron expression, not both")
    if interval_minutes is not None and interval_minutes < 1:
        raise IntegrationsError(f"interval must be at least 1 minute, got {interval_minutes}")
    if cron is not None:
        validate_cron(cron)
    return store.create_integration(
        provider_key=provider_key,
        name=name.strip(),
        metadata=metadata or {},
        credentials=credentials or None,
        sync_interval_minutes=interval_minutes,
        sync_cron=cron,
        tenant=tenant or "default",
    )


def list_integrations(store: Store, *, tenant: str | None = None) -> list[dict[str, Any]]:
    rows = store.list_integrations(tenant=tenant, decrypt=False)
    flags = _credential_flags(store, [r.id for r in rows])
    return [integration_dict(r, has_credentials=flags.get(r.id, False)) for r in rows]


def show_integration(store: Store, integration_id: int, *, tenant: str | None = None) -> dict[str, Any]:
    integ = store.get_integration(integration_id, tenant=tenant, decrypt=False)
    data = integration_dict(integ, has_credentials=_credential_flags(store, [integ.id]).get(integ.id, False))
    data["recent_runs"] = [_run_summary(r) for r in store.runs_for_integration(integ.id, limit=5)]
    return data


def enable_integration(store: Store, integration_id: int, *, tenant: str | None = None) -> Integration:
    """Re-enable: healthy again, failure counters reset, due at once."""
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    return store.update_integration(
        integration_id, tenant=tenant, enabled=True, health="healthy", disabled_reason=None,
        consecutive_failures=0, consecutive_auth_failures=0, next_sync_at=utcnow(),
    )


def disable_integration(
    store: Store, integration_id: int, *, tenant: str | None = None, reason: str | None = None
) -> Integration:
    """Disable: never scheduled until re-enabled (a running sync finishes normally)."""
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    return store.update_integration(
        integration_id, tenant=tenant, enabled=False, health="disabled",
        disabled_reason=reason or "disabled by an operator", next_sync_at=None,
    )


def remove_integration(store: Store, integration_id: int, *, tenant: str | None = None) -> None:
    """Delete the integration and its runs, items, request log and rate budget."""
    store.delete_integration(integration_id, tenant=tenant)


# --- status ------------------------------------------------------------------------------------
def status_rows(
    store: Store, *, integration_id: int | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """One row per integration, from one grouped query (no query per integration)."""
    rows = op_sql.status_rows(store, integration_id=integration_id, tenant=tenant)
    if integration_id is not None and not rows:
        raise IntegrationNotFound(integration_id)
    return [
        {
            "id": row.id,
            "tenant": row.tenant,
            "provider": row.provider_key,
            "name": row.name,
            "enabled": bool(row.enabled),
            "health": row.health,
            "cursor": row.cursor,
            "last_synced_at": iso(row.last_synced_at),
            "next_sync_at": iso(row.next_sync_at),
            "last_run_id": row.last_run_id,
            "last_run_status": row.last_run_status,
            "last_dagster_run_id": row.last_dagster_run_id,
            "pending_items": int(row.pending),
            "failed_items": int(row.failed),
            "superseded_items": int(row.superseded),
            # issue 13: the outbox (mutations waiting to be pushed, rejected, conflicting)
            "outbox_pending": int(row.outbox_pending),
            "outbox_failed": int(row.outbox_failed),
            "outbox_conflict": int(row.outbox_conflict),
        }
        for row in rows
    ]


# --- failed items ------------------------------------------------------------------------------
def item_dict(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "integration_id": item["integration_id"],
        "sync_run_id": item["run_id"],
        "external_id": item["external_id"],
        "checkpoint": item["checkpoint"],
        "status": item["status"],
        "attempts": item["attempts"],
        "last_error": item["last_error"],
        "skip_reason": item.get("skip_reason"),
        "failed_at": iso(item["finished_at"]) if item["status"] == ItemStatus.FAILED else None,
    }


def list_failed_items(
    store: Store, *, integration_id: int | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    if integration_id is not None:
        store.get_integration(integration_id, tenant=tenant, decrypt=False)  # not found -> error
    return [item_dict(x) for x in store.failed_items(integration_id=integration_id, tenant=tenant)]


# --- failed and conflicting mutations (issue 13): the outbox's counterpart of failed items -------
def mutation_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "integration_id": row["integration_id"],
        "mutation_id": row["mutation_id"],
        "entity": row["entity"],
        "key": row["entity_key"],
        "operation": row["operation"],
        "status": row["status"],
        "attempts": row["attempts"],
        "reason": row["reason"],
        "details": row["details"],
        "server_state": row["server_state"],
        "sync_run_id": row.get("sync_run_id"),
        "skip_reason": row.get("skip_reason"),
        "finished_at": iso(row["finished_at"]),
    }


def list_failed_mutations(
    store: Store, *, integration_id: int | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Failed (rejected) and conflicting mutations: each holds back the later mutations of its key."""
    from integrations_dagster.store.outbox import Outbox

    if integration_id is not None:
        store.get_integration(integration_id, tenant=tenant, decrypt=False)
    rows = Outbox(store).list(integration_id)
    if tenant is not None and integration_id is None:
        allowed = {i.id for i in store.list_integrations(tenant=tenant)}
        rows = [r for r in rows if r["integration_id"] in allowed]
    return [mutation_dict(r) for r in rows]


@dataclass
class MutationActionResult:
    """What ``retry_mutations`` / ``skip_mutation`` did."""

    integration_id: int
    mutation_ids: list[int]
    changed: int
    status: str
    outbox: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mutation_integration(store: Store, mutation_pk: int, tenant: str | None) -> int:
    from integrations_dagster.store.outbox import Outbox, OutboxError

    try:
        row = Outbox(store).get(mutation_pk)
    except OutboxError as exc:
        raise IntegrationsError(str(exc)) from None
    store.get_integration(row["integration_id"], tenant=tenant, decrypt=False)  # other tenant: not found
    if row["status"] not in ("failed", "conflict"):
        raise IntegrationsError(f"mutation {mutation_pk} is {row['status']}, not failed or conflict")
    return int(row["integration_id"])


def retry_mutations(
    store: Store, *, mutation_ids: Sequence[int] = (), integration_id: int | None = None, tenant: str | None = None
) -> MutationActionResult:
    """Failed or conflicting mutations back to pending (attempts reset): the next push sends them
    (``integrations push ID``, the push sensor, or the next cycle). ``integration_id`` alone: all of
    that integration's failed and conflicting mutations."""
    from integrations_dagster.store.outbox import Outbox

    box = Outbox(store)
    ids = list(mutation_ids)
    if ids:
        owners = {_mutation_integration(store, i, tenant) for i in ids}
        if len(owners) != 1 or (integration_id is not None and owners != {integration_id}):
            raise IntegrationsError("the mutations to retry must belong to one integration")
        integration_id = owners.pop()
    elif integration_id is not None:
        store.get_integration(integration_id, tenant=tenant, decrypt=False)
        ids = [r["id"] for r in box.list(integration_id)]
        if not ids:
            raise IntegrationsError(f"integration {integration_id} has no failed or conflicting mutations")
    else:
        raise IntegrationsError("name mutation ids or an integration")
    changed = box.retry(ids)
    return MutationActionResult(integration_id, ids, changed, "pending", box.counts(integration_id))


def skip_mutation(
    store: Store, mutation_pk: int, *, reason: str | None = None, tenant: str | None = None
) -> MutationActionResult:
    """Give up on a failed or conflicting mutation (reason kept): the later mutations of its key go on."""
    from integrations_dagster.store.outbox import Outbox

    integration_id = _mutation_integration(store, mutation_pk, tenant)
    box = Outbox(store)
    changed = box.skip([mutation_pk], reason=reason or "skipped by an operator")
    return MutationActionResult(integration_id, [mutation_pk], changed, "skipped", box.counts(integration_id))


# --- skip and retry ----------------------------------------------------------------------------
@dataclass
class ItemActionResult:
    """What ``skip_item`` / ``retry_item`` did and where the run and cursor ended up."""

    item_id: int
    integration_id: int
    sync_run_id: int
    item_status: str
    attempts: int
    last_error: str | None
    skip_reason: str | None
    run_status: str
    cursor_before: Any
    cursor_after: Any
    changed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cursor(store: Store, integration_id: int) -> Any:
    return op_sql.cursor_of(store, integration_id)


def skip_item(
    store: Store,
    engine: SyncEngine,
    item_id: int,
    *,
    reason: str | None = None,
    tenant: str | None = None,
    log: Any = log_default,
) -> ItemActionResult:
    """Mark a failed item skipped (reason kept), then reconcile its run so the cursor can move on."""
    item = store.get_item(item_id, tenant=tenant)
    reason = (reason or "").strip() or DEFAULT_SKIP_REASON
    before = _cursor(store, item["integration_id"])
    if item["status"] == ItemStatus.SKIPPED:
        result = engine.reconcile(store, item["run_id"], log=log)
        return ItemActionResult(item_id, item["integration_id"], item["run_id"], ItemStatus.SKIPPED, item["attempts"],
                                item["last_error"], item["skip_reason"], result.status, before,
                                _cursor(store, item["integration_id"]), changed=False)
    if item["status"] != ItemStatus.FAILED:
        raise IntegrationsError(
            f"sync item {item_id} is {item['status']}, not failed; only failed items can be skipped"
            + (" (run `integrations advance-cursor` to reclaim items stuck in processing)"
               if item["status"] in UNFINISHED else "")
        )
    now = engine.clock()
    if not op_sql.skip_failed_item(store, item_id, reason, now):
        raise IntegrationsError(f"sync item {item_id} changed while skipping it (retried or skipped elsewhere); "
                                "look at it again")
    log.info(f"sync item {item_id} ({item['external_id']}) skipped: {reason}")
    result = engine.reconcile(store, item["run_id"], log=log)
    return ItemActionResult(item_id, item["integration_id"], item["run_id"], ItemStatus.SKIPPED, item["attempts"],
                            item["last_error"], reason, result.status, before,
                            _cursor(store, item["integration_id"]))


def _retry_now(
    store: Store, engine: SyncEngine, items: list[dict[str, Any]], log: Any
) -> tuple[dict[int, dict[str, Any]], list[ReconcileResult]]:
    """Claim failed ``items`` (attempts reset), run their listeners once now, write, reconcile.

    An item whose later version has succeeded is not run (it would overwrite newer data): it
    becomes ``superseded`` instead (``engine.supersede``).
    """
    now = engine.clock()
    superseded = _supersede(store, items, now)
    items = [it for it in items if it["id"] not in superseded]
    taken = op_sql.claim_failed(store, [it["id"] for it in items], now)  # one statement: those still failed
    claimed = [it for it in items if it["id"] in taken]
    outcomes: dict[int, tuple[BaseException, str]] = {}
    try:
        outcomes = engine.run_listeners_once(store, claimed)
    except BaseException as exc:  # interrupted: put the items back as failed, never leave them processing
        outcomes = {it["id"]: (exc, "fatal") for it in claimed}
        _write_retry_outcomes(store, engine, claimed, outcomes)
        raise
    written = _write_retry_outcomes(store, engine, claimed, outcomes)
    written.update(superseded)
    runs = {it["run_id"] for it in claimed} | {w["run_id"] for w in superseded.values()}
    results = [engine.reconcile(store, run_id, log=log) for run_id in sorted(runs)]
    _settled_states(store, written)
    for item_id, state in written.items():
        if state["status"] == ItemStatus.FAILED:
            log.warning(f"sync item {item_id} failed again: {state['last_error']}")
    return written, results


def _supersede(store: Store, items: list[dict[str, Any]], now: Any) -> dict[int, dict[str, Any]]:
    """Mark the superseded ones of ``items``; what ``_retry_now`` reports for them, by item id."""
    by_integration: dict[int, list[dict[str, Any]]] = {}
    for it in items:
        if it["external_id"] is not None:
            by_integration.setdefault(int(it["integration_id"]), []).append(it)
    if not by_integration:
        return {}
    gone: set[int] = set()
    with store.begin() as conn:
        for integration_id, group in by_integration.items():
            ids, _ = supersede(conn, integration_id, [Version(it["id"], it["external_id"], it["status"])
                                                      for it in group], now)
            gone |= ids
    return {it["id"]: {"status": ItemStatus.SUPERSEDED, "last_error": it["last_error"], "attempts": it["attempts"],
                       "run_id": it["run_id"]} for it in items if it["id"] in gone}


def _settled_states(store: Store, written: dict[int, dict[str, Any]]) -> None:
    """Report what reconcile left: it may fail a succeeded item again (an invalid checkpoint)."""
    succeeded = [i for i, w in written.items() if w["status"] == ItemStatus.SUCCESS]
    for item_id, status, error in op_sql.item_states(store, succeeded):
        if status != ItemStatus.SUCCESS:
            written[item_id].update(status=status, last_error=error)


def _write_retry_outcomes(
    store: Store, engine: SyncEngine, claimed: list[dict[str, Any]], outcomes: dict[int, tuple[BaseException, str]]
) -> dict[int, dict[str, Any]]:
    now = engine.clock()
    written: dict[int, dict[str, Any]] = {}
    for it in claimed:
        problem = outcomes.get(it["id"])
        if problem is None:
            written[it["id"]] = {"status": ItemStatus.SUCCESS, "last_error": None, "attempts": 1}
            continue
        exc, kind = problem
        error = engine.error_text(store, it["integration_id"], exc)  # credentials masked
        if kind == "defer":
            error += " (rate limited; retry later)"
        written[it["id"]] = {"status": ItemStatus.FAILED, "last_error": error[:4000], "attempts": 1}
    if not written:
        return written
    op_sql.finish_claimed(store, [(i, w["status"], w["last_error"]) for i, w in written.items()], now)
    return written


def retry_item(
    store: Store, engine: SyncEngine, item_id: int, *, tenant: str | None = None, log: Any = log_default
) -> ItemActionResult:
    """Reset one failed item and run its listeners once, now, in this process; then reconcile its run.

    If the listener still fails the item stays failed with the new error (attempts 1). An item whose
    later version has succeeded is not run: it becomes ``superseded`` (``item_status``).
    """
    item = store.get_item(item_id, tenant=tenant)
    if item["status"] != ItemStatus.FAILED:
        raise IntegrationsError(
            f"sync item {item_id} is {item['status']}, not failed; only failed items can be retried"
        )
    before = _cursor(store, item["integration_id"])
    written, results = _retry_now(store, engine, [item], log)
    if item_id not in written:
        raise IntegrationsError(f"sync item {item_id} changed while retrying it (retried or skipped elsewhere)")
    state = written[item_id]
    if state["status"] == ItemStatus.SUPERSEDED:
        log.info(f"sync item {item_id} ({item['external_id']}) not retried: a later version succeeded (superseded)")
    reason = store.get_item(item_id)["skip_reason"] if state["status"] == ItemStatus.SUPERSEDED else None
    return ItemActionResult(item_id, item["integration_id"], item["run_id"], state["status"], state["attempts"],
                            state["last_error"], reason, results[0].status, before,
                            _cursor(store, item["integration_id"]))


@dataclass
class RetryFailedResult:
    integration_id: int
    retried: int
    succeeded: int
    still_failed: int
    runs: list[dict[str, Any]]
    cursor_before: Any
    cursor_after: Any
    #: Failed items not retried because a later version had succeeded (now ``superseded``).
    superseded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_failed_items(
    store: Store, engine: SyncEngine, integration_id: int, *, tenant: str | None = None, log: Any = log_default
) -> RetryFailedResult:
    """Every failed item of the integration gets one immediate attempt (as ``retry_item``)."""
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    before = _cursor(store, integration_id)
    items = store.failed_items(integration_id=integration_id)
    written: dict[int, dict[str, Any]] = {}
    results: list[ReconcileResult] = []
    for batch in chunked(items, engine.settings.chunk_size):
        w, r = _retry_now(store, engine, batch, log)
        written.update(w)
        results.extend(r)
    ok = sum(1 for s in written.values() if s["status"] == ItemStatus.SUCCESS)
    moot = sum(1 for s in written.values() if s["status"] == ItemStatus.SUPERSEDED)
    return RetryFailedResult(
        integration_id=integration_id, retried=len(written) - moot, succeeded=ok,
        still_failed=len(written) - ok - moot,
        runs=[{"sync_run_id": r.run_id, "status": r.status} for r in results],
        cursor_before=before, cursor_after=_cursor(store, integration_id), superseded=moot,
    )


# --- advance cursor ----------------------------------------------------------------------------
#: ``advance_cursor(set_cursor=KEEP_CURSOR)``: leave the cursor as it is (None would clear it).
KEEP_CURSOR: Any = type("KeepCursor", (), {"__repr__": lambda self: "KEEP_CURSOR"})()


def _check_cursor_value(value: Any) -> None:
    """A cursor must be a JSON value that every store can hold (no NaN, no NUL, no lone surrogate)."""
    from integrations_dagster.authoring.session import _check_json, _value_problem

    try:
        _check_json(value, "a cursor")
    except TypeError as exc:
        raise IntegrationsError(str(exc)) from None
    problem = _value_problem(value)
    if problem:
        raise IntegrationsError(f"a cursor cannot be stored: {ascii(value)[:200]} {problem}")


@dataclass
class AdvanceResult:
    integration_id: int
    reclaimed_items: list[int]
    abandoned_items: list[int]
    runs: list[dict[str, Any]]
    cursor_before: Any
    cursor_after: Any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def advance_cursor(
    store: Store,
    engine: SyncEngine,
    integration_id: int,
    *,
    tenant: str | None = None,
    is_run_alive: RunAliveCheck | None = None,
    log: Any = log_default,
    progress: Progress = _noop,
    set_cursor: Any = KEEP_CURSOR,
) -> AdvanceResult:
    """Nudge an integration whose cursor is stuck.

    0. With ``set_cursor`` (any JSON value, None included), the cursor is first replaced by it,
       unconditionally: the way out when the stored cursor cannot be ordered with what the provider
       now reports (a provider that moved from numbers to timestamps), or to re-read from a point.
       Items that failed because of it ("invalid checkpoint") are then retried or skipped as usual.

    1. Items left in ``processing`` whose claim is older than ``settings.job_timeout`` (the worker
       died) are marked failed with a clear error, so ``retry-item`` or ``skip-sync-item`` can take
       over.
    2. When ``is_run_alive`` says a processing run's Dagster run has ended, that run's remaining
       pending items are failed the same way (nothing will ever run them).
    3. Every run of the integration that is processing, partial or failed is reconciled again
       (idempotent), which moves the cursor past skipped and succeeded items.
    """
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    before = _cursor(store, integration_id)
    now = engine.clock()
    if set_cursor is not KEEP_CURSOR:
        _check_cursor_value(set_cursor)
        store.update_integration(integration_id, tenant=tenant, cursor=set_cursor)
        log.warning(f"integration {integration_id}: cursor set by an operator: {json.dumps(before, default=str)} -> "
                    f"{json.dumps(set_cursor)}")
    cutoff = now - timedelta(seconds=engine.settings.job_timeout)
    stuck = op_sql.fail_stuck_processing(
        store, integration_id, cutoff, now,
        f"abandoned: claimed at least {engine.settings.job_timeout:g} s ago (the job timeout) and never "
        "finished; the worker probably died. Retry it with `integrations retry-item` or skip it with "
        "`integrations skip-sync-item`")
    abandoned: list[int] = []
    if is_run_alive is not None:
        from integrations_dagster.engine.runs import run_alive

        dead = [run.id for run in op_sql.processing_runs(store, integration_id)
                if run_alive(run, is_run_alive) is False]
        if dead:
            abandoned = op_sql.fail_unfinished_of_runs(
                store, dead, now, "abandoned: the Dagster run that owned this item ended before it ran")
    if stuck or abandoned:
        log.warning(f"integration {integration_id}: reclaimed {len(stuck)} stuck and {len(abandoned)} "
                    "abandoned items as failed")
    run_ids = engine.unfinished_runs(store, integration_id)
    results = []
    for n, run_id in enumerate(run_ids, 1):
        progress(f"reconciling sync run {run_id} ({n}/{len(run_ids)})")
        res = engine.reconcile(store, run_id, log=log)
        results.append({"sync_run_id": run_id, "status": res.status, "final": res.final, "changed": res.changed,
                        "cursor_after": res.cursor_after if res.final else None})
    return AdvanceResult(integration_id, stuck, sorted(abandoned), results, before, _cursor(store, integration_id))


# --- prune -------------------------------------------------------------------------------------
@dataclass
class PruneResult:
    days: float
    cutoff: str
    sync_items_deleted: int
    requests_deleted: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune(
    store: Store,
    *,
    days: float = DEFAULT_PRUNE_DAYS,
    tenant: str | None = None,
    now: datetime | None = None,
    batch_size: int = 5000,
    progress: Progress = _noop,
) -> PruneResult:
    """Delete success/skipped item rows and request-log rows older than ``days``; failed rows stay."""
    if days < 0:
        raise IntegrationsError(f"days must be 0 or more, got {days:g}")
    cutoff = (now or utcnow()) - timedelta(days=days)
    items = op_sql.prune_items(store, cutoff, tenant=tenant, batch_size=batch_size,
                               report=lambda n: progress(f"sync items deleted: {n}"))
    reqs = op_sql.prune_requests(store, cutoff, tenant=tenant, batch_size=batch_size,
                                 report=lambda n: progress(f"request log rows deleted: {n}"))
    return PruneResult(days=days, cutoff=iso(cutoff) or "", sync_items_deleted=items, requests_deleted=reqs)


# --- timeline ----------------------------------------------------------------------------------
def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "dagster_run_id": run["dagster_run_id"],
        "status": run["status"],
        "trigger": run["trigger"],
        "started_at": iso(run["started_at"]),
        "finished_at": iso(run["finished_at"]),
        **run_summary(run),
        "requests": run["request_count"],
        "cursor_before": run["cursor_before"],
        "cursor_after": run["cursor_after"],
        "error": run["error"],
        "direction": run.get("direction"),
        "push": run.get("push_summary"),
    }


def timeline(
    store: Store, integration_id: int, *, limit: int = 10, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The latest ``limit`` runs (newest first), each with the API requests logged under it."""
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    runs = [_run_summary(r) for r in store.runs_for_integration(integration_id, limit=max(1, limit))]
    by_run: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in runs}
    for row in op_sql.requests_of_runs(store, list(by_run)):
        by_run[row.sync_run_id].append({
            "id": row.id, "method": row.method, "url": row.url, "status_code": row.status_code,
            "duration_ms": round(float(row.duration_ms or 0.0), 1), "bytes": row.bytes,
            "attempt": row.attempt, "error": row.error, "created_at": iso(row.created_at),
        })
    for run in runs:
        run["request_log"] = by_run[run["id"]]
    return runs


# --- credentials -------------------------------------------------------------------------------
@dataclass
class RotateResult:
    rotated: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rotate_credentials(
    store: Store, *, cipher: CredentialCipher | None = None, tenant: str | None = None,
    progress: Progress = _noop,
) -> RotateResult:
    """Re-encrypt every stored credential with the first key of ``INTEGRATIONS_SECRET_KEY``.

    All rows are re-encrypted in memory first; nothing is written unless every row decrypts, so a
    missing old key leaves the database unchanged.
    """
    cipher = cipher or CredentialCipher()
    if not cipher.has_key:
        raise CredentialsError("INTEGRATIONS_SECRET_KEY must be set to rotate credentials "
                               "(make a key with `integrations generate-key`)")

    def rotate_all(rows: list[tuple[int, str]]) -> list[tuple[int, str | None]]:
        new: list[tuple[int, str | None]] = []
        for iid, token in rows:
            try:
                new.append((iid, cipher.rotate(token)))
            except CredentialsError:
                raise
            except Exception:
                raise CredentialsError(
                    f"the credentials of integration {iid} cannot be decrypted with any key in "
                    "INTEGRATIONS_SECRET_KEY; list the new key first and keep the old one after it "
                    "(INTEGRATIONS_SECRET_KEY=NEW,OLD); nothing was changed"
                ) from None
        return new

    rotated, total = op_sql.rewrite_credentials(store, rotate_all, tenant=tenant, progress=progress)
    return RotateResult(rotated=rotated, total=total)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


__all__ = [
    "AdvanceResult",
    "ItemActionResult",
    "PruneResult",
    "RetryFailedResult",
    "RotateResult",
    "add_integration",
    "advance_cursor",
    "disable_integration",
    "enable_integration",
    "list_failed_items",
    "list_integrations",
    "prune",
    "remove_integration",
    "retry_failed_items",
    "retry_item",
    "rotate_credentials",
    "show_integration",
    "skip_item",
    "status_rows",
    "timeline",
]
