"""Enumeration: run the provider, which dispatches items through a ``SyncSession``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.context import SyncContext, http_factory_for, sync_context
from integrations_dagster.authoring.integration import Integration
from integrations_dagster.authoring.session import SyncSession
from integrations_dagster.engine.apply import WriteApplier
from integrations_dagster.engine.pipeline import ChunkPipeline, pipelining
from integrations_dagster.engine.push import Direction, SyncResult, parse_direction, push_caller, push_pending
from integrations_dagster.engine.reconcile import apply_health
from integrations_dagster.engine.results import EnumerationResult
from integrations_dagster.errors import IntegrationsError
from integrations_dagster.security.redaction import safe_error
from integrations_dagster.status import RunStatus
from integrations_dagster.store import Store
from integrations_dagster.store import runs as run_sql
from integrations_dagster.store.outbox import Outbox

if TYPE_CHECKING:
    from integrations_dagster.engine.engine import SyncEngine

log_default = logging.getLogger("integrations_dagster")


def enumerate_run(
    engine: SyncEngine,
    store: Store,
    integration: Integration,
    run_id: int,
    *,
    log: Any = log_default,
    http_factory: Callable[[SyncSession], Any] | None = None,
    direction: Direction | str | None = None,
) -> EnumerationResult:
    """Run the provider; on any exception discard what it dispatched and fail the run.

    For a provider that pushes (issue 13), ``direction`` (default ``sync``) decides the phases:
    push the outbox's pending mutations (``engine.push.push_pending``; its counts are written to
    the run at once, so they survive a later failure), dispatch every conflict's server state that
    no run has delivered yet as a tracked item, then pull (the provider's ``enumerate``). A pull-only
    run still delivers undelivered conflicts. Outcomes of pushed mutations are committed per batch
    and are never rolled back: if the pull then fails, only the run's items are discarded and the
    conflicts stay undelivered for the next run.
    """
    try:
        provider = engine.provider(integration.provider_key)
    except Exception as exc:  # a provider removed from the code: fail the run now, do not leave it enumerating
        fail_enumeration(engine, store, integration, run_id, exc)
        raise
    if provider.owned_tables is not None:
        store.ensure_provider_tables(provider.owned_tables)
    pushes = provider.supports_push()
    way = parse_direction(direction) if pushes else None
    if not pushes and direction not in (None, "", Direction.PULL, Direction.SYNC):
        fail = IntegrationsError(f"provider {provider.key!r} does not push; only pull runs are possible")
        fail_enumeration(engine, store, integration, run_id, fail)
        raise fail
    session = SyncSession(store=store, run_id=run_id, integration=integration, settings=engine.settings, log=log,
                          chunk_size=provider.chunk_size)
    if http_factory is not None:
        session._http_factory = lambda: http_factory(session)
    if engine.settings.apply_at_write and not store.is_sqlite:
        # Staged listeners applied in the transaction that records each batch (engine.apply); the
        # listener context is the chunk steps' (current_sync(): the integration, the run, its API).
        factory = http_factory_for(engine, store, provider, integration, run_id, for_items=True)
        session.applier = WriteApplier(
            store, engine.listeners, engine.event_types, enabled=True,
            context=SyncContext(integration=integration, sync_run_id=run_id, store=store, _factory=factory))
    pipeline: ChunkPipeline | None = None
    if pipelining(enabled=engine.settings.pipeline_chunks, postgres=not store.is_sqlite):
        pipeline = ChunkPipeline(engine, store, run_id, session.chunk_size, session.event_classes,
                                 lambda: session.dispatched, log)
        session.on_written = pipeline.written
    delivered: list[int] = []
    pushed: SyncResult | None = None

    def end_enumeration(conn: Any) -> None:  # the store's connection, in the last write's transaction
        # In the transaction of the last dispatched items: they and the run's end of enumeration
        # commit together. Raises SyncRunDiscarded when the run was discarded meanwhile (presumed
        # dead): nothing of it is written, and it must not go on to processing and reconciliation.
        store.transition_run(
            conn, run_id, RunStatus.ENUMERATING, "finish its enumeration",
            status=RunStatus.PROCESSING, items_total=session.dispatched, chunks=session.chunks,
            enumerated_at=engine.clock(),
        )
        Outbox.mark_delivered(conn, delivered, run_id)
    try:
        if way is not None:
            box = Outbox(store)
            if way.pushes:
                pushed = SyncResult()
                # push(integration, batch) or push(integration, batch, session); current_sync().http is
                # the run's client either way (borrowed: the pull below uses it too).
                ctx = SyncContext(integration=integration, sync_run_id=run_id, store=store,
                                  _factory=lambda: session.http, _owns_http=False)
                try:
                    with sync_context(ctx):
                        push_pending(
                            box, integration, push_caller(provider.push, session),
                            push_batch_size=provider.push_batch_size or engine.settings.push_batch_size,
                            max_retry_attempts=engine.settings.max_retry_attempts, run_id=run_id, result=pushed,
                        )
                finally:
                    with store.begin() as conn:
                        run_sql.set_push_summary(conn, run_id, pushed.push_summary())
                log.info(f"{integration}: pushed {pushed.pushed}, conflicts {pushed.conflicts}, "
                         f"rejected {pushed.failed}, retried later {pushed.retried} (sync run {run_id})")
            for m in box.undelivered_conflicts(integration.id):
                session.dispatch(provider.conflict_event(integration, m, m.server_state), checkpoint_value=None,
                                 external_id=provider.conflict_external_id(integration, m))
                delivered.append(m.id)
        if way is None or way.pulls:
            provider.enumerate(integration, session)
        if pipeline is None:
            # No dispatch is accepted after this (e.g. from a helper thread); the last items and the
            # end of the enumeration are one transaction.
            session.finish(then=end_enumeration)
        else:
            session.finish()  # no dispatch is accepted after this (e.g. from a helper thread)
            pipeline.finish(session.dispatched)  # every handed-over chunk is done before the run leaves enumerating
    except BaseException as exc:
        session.stop_writing()  # no batch may land after the discard below
        if pipeline is not None:
            pipeline.stop()  # nor a pipelined listener run
        # (A run already discarded or moved on by another process: fail_enumeration changes nothing.)
        fail_enumeration(engine, store, integration, run_id, exc)
        raise
    finally:
        session.close()
    if pipeline is not None:  # pipelined: the end of enumeration after its chunks, in its own transaction
        with store.begin() as conn:
            end_enumeration(conn)
    if session.pending_chunks != []:  # chunk steps follow: their probes need the planner's statistics
        store.refresh_statistics(session.dispatched)
    applier = session.applier
    if applier is not None and applier.applied:
        fell_back = f"; {applier.fallbacks} batches recorded pending after a failed staged call " \
            f"({type(applier.last_problem).__name__})" if applier.fallbacks else ""
        log.info(f"{integration}: enumerated {session.dispatched} items in {session.chunks} chunks, "
                 f"{applier.applied} applied at write{fell_back} (sync run {run_id})")
    else:
        log.info(f"{integration}: enumerated {session.dispatched} items in {session.chunks} chunks (sync run {run_id})")
    return EnumerationResult(run_id=run_id, items=session.dispatched, chunks=session.chunks,
                             pending_chunks=session.pending_chunks)


def fail_enumeration(
    engine: SyncEngine, store: Store, integration: Integration, run_id: int, exc: BaseException
) -> None:
    now = engine.clock()
    auth = bool(getattr(exc, "auth_failure", False))
    message = safe_error(exc, integration)
    with store.begin() as conn:
        if not run_sql.discard_enumeration(conn, run_id, f"enumeration failed: {message}", now):
            return  # already discarded (or settled) by another process: it owns the outcome
        run_sql.set_auth_failure(conn, run_id, auth)
        apply_health(engine, conn, integration.id, RunStatus.FAILED, auth, now)
