"""Enumeration: run the provider, which dispatches items through a ``SyncSession``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.integration import Integration
from integrations_dagster.authoring.session import SyncSession
from integrations_dagster.engine.reconcile import apply_health
from integrations_dagster.engine.results import EnumerationResult
from integrations_dagster.security.redaction import safe_error
from integrations_dagster.status import RunStatus
from integrations_dagster.store import Store
from integrations_dagster.store import runs as run_sql

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
) -> EnumerationResult:
    """Run the provider; on any exception discard what it dispatched and fail the run."""
    provider = engine.provider(integration.provider_key)
    if provider.owned_tables is not None:
        store.ensure_provider_tables(provider.owned_tables)
    session = SyncSession(store=store, run_id=run_id, integration=integration, settings=engine.settings, log=log,
                          chunk_size=provider.chunk_size)
    if http_factory is not None:
        session._http_factory = lambda: http_factory(session)
    try:
        provider.enumerate(integration, session)
        session.finish()  # no dispatch is accepted after this (e.g. from a helper thread)
    except BaseException as exc:
        session.stop_writing()  # no batch may land after the discard below
        fail_enumeration(engine, store, integration, run_id, exc)
        raise
    finally:
        session.close()
    now = engine.clock()
    with store.begin() as conn:
        # Raises SyncRunDiscarded when the run was discarded meanwhile (presumed dead): what it
        # dispatched is gone, so it must not go on to processing and reconciliation.
        store.transition_run(
            conn, run_id, RunStatus.ENUMERATING, "finish its enumeration",
            status=RunStatus.PROCESSING, items_total=session.dispatched, chunks=session.chunks, enumerated_at=now,
        )
    log.info(f"{integration}: enumerated {session.dispatched} items in {session.chunks} chunks (sync run {run_id})")
    return EnumerationResult(run_id=run_id, items=session.dispatched, chunks=session.chunks)


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
