"""Processing one chunk of a run: claim it, run its items' listeners with retries inside the
step, write the outcomes (on PostgreSQL in the background while the next batch runs)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.context import SyncContext, http_factory_for, sync_context
from integrations_dagster.authoring.integration import Integration
from integrations_dagster.engine.background import BackgroundWriter
from integrations_dagster.engine.dispatch import Problem, run_listeners
from integrations_dagster.engine.results import ChunkResult
from integrations_dagster.engine.retry import after_failure
from integrations_dagster.engine.supersede import Version, probe_needed, supersede
from integrations_dagster.security.redaction import scrub, secret_values
from integrations_dagster.status import RUN_CLAIMABLE, ItemStatus, RunStatus
from integrations_dagster.store import Store, as_utc
from integrations_dagster.store import items as item_sql
from integrations_dagster.store import runs as run_sql
from integrations_dagster.store.locks import ChunkClaim, chunk_lock

if TYPE_CHECKING:
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.engine.pipeline import PipelineGuard

log_default = logging.getLogger("integrations_dagster")


def process_chunk(
    engine: SyncEngine,
    store: Store,
    run_id: int,
    chunk: int,
    *,
    reopen_failed: bool = False,
    dagster_run_id: str | None = None,
    log: Any = log_default,
    integration: Integration | None = None,
    pipelined: PipelineGuard | None = None,
) -> ChunkResult:
    """Run listeners for the chunk's unfinished items, retrying inside the step.

    Returns with ``waiting > 0`` when the next retry is further away than ``inline_wait_max``;
    the caller hands the step back to Dagster for that long (other steps run meanwhile). The
    result also names the chunk's items that had already failed before this step (a pipelined
    pass failed them, or an earlier attempt of this step), so the step reports every failure.

    ``integration``: the run's integration as the caller already holds it (a batch step: the one it
    started and enumerated the run with), so it is not read again; any other is ignored and read.

    ``pipelined`` (``engine.pipeline``): the chunk is processed while its run is still
    enumerating: the claim requires the run to be enumerating, every ready item runs once (no
    retry waits: an item to retry keeps its new state and is left pending for the chunk step), and
    the guard is consulted before each batch and inside each staged listener's transaction.
    """
    result = ChunkResult(run_id=run_id, chunk=chunk)
    with chunk_lock(store, run_id, chunk) as claimed:
        if not claimed:  # another step holds this chunk right now: it will finish it
            log.info(f"sync run {run_id} chunk {chunk}: already being processed elsewhere")
            return result
        # The chunk's items that failed before this step (a pipelined pass, an earlier attempt) are read
        # in the claim's transaction.
        earlier: list[tuple[int, str | None, str]] = []
        integration_id, items = claim(engine, store, run_id, chunk, reopen_failed=reopen_failed,
                                      dagster_run_id=dagster_run_id, enumerating=pipelined is not None,
                                      earlier_failures=None if pipelined is not None or reopen_failed else earlier)
        result.failed += len(earlier)
        result.failed_items.extend(earlier)
        if not items:
            return result
        if integration is None or integration.id != integration_id:
            integration = store.get_integration(integration_id)
        provider = engine.providers.get(integration.provider_key)
        if provider is not None and provider.owned_tables is not None:
            store.ensure_provider_tables(provider.owned_tables)
        factory = http_factory_for(engine, store, provider, integration, run_id, for_items=True) if provider else None
        with sync_context(SyncContext(integration=integration, sync_run_id=run_id, store=store, _factory=factory)):
            return _process_items(engine, store, run_id, chunk, items, result, log, secret_values(integration),
                                  claimed, pipelined)


def finish_leftover_chunks(
    engine: SyncEngine,
    store: Store,
    run_id: int,
    *,
    dagster_run_id: str | None = None,
    log: Any = log_default,
) -> list[ChunkResult]:
    """Process, here and now, every chunk of the run that still has unfinished items.

    Called by the reconcile step, after every chunk step of the Dagster run has ended: an
    unfinished item then belongs to a chunk whose step did not run in this Dagster run. That
    happens when a run whose worker was killed mid-chunk is re-executed from failure (by the UI,
    ``run_retries`` or ``integrations retry``): Dagster re-runs the interrupted chunk step and the
    reconcile, but not the mapped steps that had not started when the worker died
    (``dagster/_core/execution/plan/state.py``, ``_derive_state_of_past_run``: a never-started
    instance of a dynamic step that has started siblings is not selected). Without this, the
    re-execution would end with those items unfinished. Each chunk takes its claim as a chunk
    step does, so a chunk another process is still working on is left to it. Retry waits are slept
    here (the reconcile step has nowhere to hand them back to).
    """
    results: list[ChunkResult] = []
    for chunk in item_sql.unfinished_chunks(store, run_id):
        log.info(f"sync run {run_id} chunk {chunk}: no chunk step ran it in this Dagster run; processing it "
                 "in the reconcile step")
        total = ChunkResult(run_id=run_id, chunk=chunk)
        while True:
            res = process_chunk(engine, store, run_id, chunk, dagster_run_id=dagster_run_id, log=log)
            total.succeeded += res.succeeded
            total.failed += res.failed
            total.failed_items.extend(res.failed_items)
            if not res.waiting:
                break
            engine.sleep(res.wait_seconds)
        results.append(total)
    return results


def claim(
    engine: SyncEngine, store: Store, run_id: int, chunk: int, *, reopen_failed: bool, dagster_run_id: str | None,
    enumerating: bool = False, earlier_failures: list[tuple[int, str | None, str]] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Take the chunk's unfinished items (and its failed ones when re-executing): (the run's integration
    id, the items); (0, []) when the run is gone.

    Called under ``chunk_lock``, so no other step is working on this chunk. ``enumerating``: the
    run's own enumeration processes a chunk it has finished writing (``engine.pipeline``); the run
    must still be enumerating. ``earlier_failures``: filled with the chunk's failed items
    (``item_sql.failed_items_of_chunk``), read in the same transaction.
    """
    now = engine.clock()
    with store.begin() as conn:
        if earlier_failures is not None:
            earlier_failures.extend(item_sql.failed_items_of_chunk(conn, run_id, chunk))
        run = run_sql.claimable_run(store, conn, run_id)
        if run is None:
            return 0, []
        if enumerating:
            if run.status != RunStatus.ENUMERATING:
                return int(run.integration_id), []  # discarded meanwhile: nothing of it may run
        elif run.enumerated_at is None or run.status not in RUN_CLAIMABLE:
            return int(run.integration_id), []  # discarded (or never enumerated): nothing of it may run
        if reopen_failed:
            # A failed item whose later version succeeded is not reopened: it is superseded.
            failed = item_sql.failed_of_chunk(conn, run_id, chunk)
            supersede(conn, int(run.integration_id), [Version(*f) for f in failed], now)
            if item_sql.reopen_failed(conn, run_id, chunk):
                store.transition_run(conn, run_id, RUN_CLAIMABLE, "reopen its failed items",
                                     status=RunStatus.PROCESSING, finished_at=None, dagster_run_id=dagster_run_id)
        rows = item_sql.claim_unfinished(store, conn, run_id, chunk, now)
        if not rows:
            return int(run.integration_id), rows
        # Never run an older version over a newer one that already succeeded (engine.supersede),
        # when one can exist at all (probe_needed: one cheap round trip instead of a probe of every id).
        later_run, later_success = (False, False) if enumerating or reopen_failed else \
            item_sql.later_versions_possible(conn, int(run.integration_id), run_id, chunk, int(run.chunks or 0))
        if not probe_needed(reopening=reopen_failed, enumerating=enumerating, later_run=later_run,
                            later_success=later_success):
            return int(run.integration_id), rows
        gone, _ = supersede(conn, int(run.integration_id),
                            [Version(r["id"], r["external_id"], r["status"]) for r in rows], now)
        return int(run.integration_id), [r for r in rows if r["id"] not in gone] if gone else rows


def drop_superseded(engine: SyncEngine, store: Store, run_id: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Before a retry round inside the step: items whose later version succeeded meanwhile (another
    chunk, another run) are marked superseded and not run again."""
    if not any(it["external_id"] is not None for it in items):
        return items
    with store.begin() as conn:
        integration_id = int(run_sql.claimable_run(store, conn, run_id).integration_id)
        gone, _ = supersede(conn, integration_id,
                            [Version(it["id"], it["external_id"], ItemStatus.PENDING) for it in items], engine.clock())
    return [it for it in items if it["id"] not in gone] if gone else items


def run_listeners_once(
    engine: SyncEngine, store: Store, items: list[dict[str, Any]]
) -> dict[int, Problem]:
    """Run the listeners of already-claimed items once, now (operator retries).

    Same rules as a chunk step: the listener context (``current_sync()``) of each item's
    integration, queued listeners refused; returns failures by item id as (exception, kind).
    """
    outcomes: dict[int, Problem] = {}
    by_integration: dict[int, list[dict[str, Any]]] = {}
    for it in items:
        by_integration.setdefault(int(it["integration_id"]), []).append(it)
    for integration_id, group in by_integration.items():
        integration = store.get_integration(integration_id)
        provider = engine.providers.get(integration.provider_key)
        if provider is not None and provider.owned_tables is not None:
            store.ensure_provider_tables(provider.owned_tables)
        factory = http_factory_for(engine, store, provider, integration, group[0]["run_id"], for_items=True) \
            if provider else None
        ctx = SyncContext(integration=integration, sync_run_id=group[0]["run_id"], store=store, _factory=factory)
        with sync_context(ctx):
            outcomes.update(run_listeners(engine.listeners, engine.event_types, store, group))
    return outcomes


def _process_items(
    engine: SyncEngine,
    store: Store,
    run_id: int,
    chunk: int,
    items: list[dict[str, Any]],
    result: ChunkResult,
    log: Any,
    secrets: list[str],
    claim: ChunkClaim | None = None,
    pipelined: PipelineGuard | None = None,
) -> ChunkResult:
    settings = engine.settings
    # PostgreSQL: each batch's status write runs in the background while the next batch's
    # listeners run; drained before the step decides anything (see BackgroundWriter). The thread
    # starts with the first batch that another batch follows: a write with nothing to overlap (a
    # small sync's one batch) is made here, without a thread. A pipelined pass is itself on a worker
    # thread beside the enumeration: it writes in line.
    writer: BackgroundWriter | None = None
    try:
        first = True
        while items:
            if not first:
                items = drop_superseded(engine, store, run_id, items)
                if not items:
                    break
            first = False
            now = engine.clock()
            ready: list[dict[str, Any]] = []
            waiting: list[dict[str, Any]] = []
            for it in items:
                due = it["next_attempt_at"] is None or as_utc(it["next_attempt_at"]) <= now
                (ready if due else waiting).append(it)
            size = settings.listener_batch_size
            for start in range(0, len(ready), size):
                part = ready[start:start + size]
                if claim is not None:
                    claim.check()  # the chunk is still ours (PostgreSQL: the advisory lock's session lives)
                if pipelined is not None:
                    pipelined.check()  # the enumeration has not failed meanwhile
                successes, changes = _run_batch(engine, store, part, now, result, waiting, secrets, pipelined)
                if (writer is None and pipelined is None and not store.is_sqlite
                        and start + size < len(ready)):
                    writer = BackgroundWriter("outcome-writer")
                if writer is not None:
                    writer.submit(item_sql.write_outcomes, store, successes, changes, now)
                else:
                    item_sql.write_outcomes(store, successes, changes, now)
                result.succeeded += len(successes)
            if writer is not None:
                writer.drain()
            items = waiting
            if not items or pipelined is not None:  # a pipelined pass leaves retries to the chunk step
                break
            next_at = min(as_utc(it["next_attempt_at"]) for it in items)
            wait = max(0.0, (next_at - engine.clock()).total_seconds())
            if wait > settings.inline_wait_max:
                result.waiting = len(items)
                result.wait_seconds = wait
                log.info(f"sync run {run_id} chunk {chunk}: {len(items)} items wait {wait:.1f} s for a retry")
                return result
            if wait > 0:
                engine.sleep(wait)
        return result
    finally:
        if writer is not None:
            writer.stop()


def _run_batch(
    engine: SyncEngine,
    store: Store,
    part: list[dict[str, Any]],
    now: datetime,
    result: ChunkResult,
    waiting: list[dict[str, Any]],
    secrets: list[str],
    pipelined: PipelineGuard | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run the listeners of ``part``; returns (succeeded ids, changes for the rest).

    Items to retry get their new state in place and are appended to ``waiting``.
    """
    outcomes = run_listeners(engine.listeners, engine.event_types, store, part,
                             staged_guard=None if pipelined is None else pipelined.in_transaction)
    successes: list[int] = []
    changes: list[dict[str, Any]] = []
    for it in part:
        outcome = outcomes.get(it["id"])
        if outcome is None:
            successes.append(it["id"])
            continue
        exc, kind = outcome
        change = after_failure(it, exc, kind, now, engine.settings).as_row()
        if secrets:  # a listener's message may quote a credential: it must not reach the item row
            change["last_error"] = scrub(change["last_error"], list(secrets))
        changes.append(change)
        if change["status"] == ItemStatus.FAILED:
            result.failed += 1
            result.failed_items.append((it["id"], it["external_id"], change["last_error"]))
        else:
            it.update(change)
            waiting.append(it)
    return successes, changes
