"""``SyncEngine``: the configured engine of one ``build_definitions`` call, and a thin facade.

It holds what every step needs (providers by key, listeners, settings, health policy, clock) and
forwards each step to the module that owns it:

====================  ==========================================================
``engine.runs``        start a run under single flight; dead-run detection
``engine.enumeration`` run the provider (dispatch through a ``SyncSession``)
``engine.chunks``      claim a chunk, run its items with retries inside the step
``engine.dispatch``    listener calls and culprit isolation
``engine.retry``       the retry policy (a pure function)
``engine.reconcile``   settle a run: status, cursor, health, events
``engine.cursor``      the cursor rule (pure functions over typed records)
``engine.events``      firing notification events
====================  ==========================================================

The Dagster ops call these; they hold every rule about items and cursors so the ops stay thin
and the rules can be exercised (and re-run by operators) without a Dagster run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.integration import Integration
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine import chunks, enumeration, runs
from integrations_dagster.engine import reconcile as _reconcile
from integrations_dagster.engine.cursor import CursorPolicy, Outcome
from integrations_dagster.engine.dispatch import EventTypes, Problem
from integrations_dagster.engine.health import HealthPolicy
from integrations_dagster.engine.reconcile import CURSOR_ERROR
from integrations_dagster.engine.results import (
    ChunkResult,
    EnumerationResult,
    ReconcileResult,
    RunAliveCheck,
    StartResult,
)
from integrations_dagster.engine.runs import run_alive
from integrations_dagster.errors import IntegrationsError, UnknownProvider
from integrations_dagster.security.redaction import safe_error
from integrations_dagster.settings import SyncSettings
from integrations_dagster.store import Store, utcnow

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from integrations_dagster.authoring.session import SyncSession

__all__ = [
    "CURSOR_ERROR",
    "ChunkResult",
    "EnumerationResult",
    "ReconcileResult",
    "RunAliveCheck",
    "StartResult",
    "SyncEngine",
    "run_alive",
]

log_default = logging.getLogger("integrations_dagster")


class SyncEngine:
    """Holds the providers, listeners and settings of one ``build_definitions`` call."""

    def __init__(
        self,
        *,
        providers: Iterable[Provider],
        listeners: ListenerRegistry,
        settings: SyncSettings,
        health: HealthPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.providers: dict[str, Provider] = {}
        for p in providers:
            if not getattr(p, "key", None):
                raise IntegrationsError(f"provider {type(p).__name__} has no key")
            if p.key in self.providers:
                raise IntegrationsError(f"two providers share the key {p.key!r}")
            self.providers[p.key] = p
        self.listeners = listeners
        present = list(listeners)
        for p in self.providers.values():
            required = getattr(p, "required_listeners", None)
            missing = [spec for spec in (required() if callable(required) else []) if spec not in present]
            if missing:
                raise IntegrationsError(
                    f"provider {p.key!r} needs its listener {', '.join(str(getattr(s, 'name', s)) for s in missing)}: "
                    f"pass it to build_definitions(listeners=[...]) (a declarative provider's is `provider.listener`)"
                )
        self.settings = settings
        self.health = health or HealthPolicy()
        self.clock = clock
        self.sleep = sleep
        #: Extra keyword arguments for every ``ApiClient`` this engine builds (tests inject a
        #: transport or a no-wait ``sleep``; production leaves it empty).
        self.http_options: dict[str, Any] = {}
        self.event_types = EventTypes()

    # --- helpers -------------------------------------------------------------------------
    def store(self, url: str | None = None) -> Store:
        return Store.for_url(url or self.settings.resolved_database_url())

    def provider(self, key: str) -> Provider:
        try:
            return self.providers[key]
        except KeyError:
            raise UnknownProvider(key, list(self.providers)) from None

    # --- the steps (see the modules named in the docstring) ------------------------------
    def start_run(
        self,
        store: Store,
        integration_id: int,
        *,
        dagster_run_id: str | None,
        trigger: str = "manual",
        is_run_alive: RunAliveCheck | None = None,
        owner: Any = None,
        direction: str | None = None,
    ) -> StartResult:
        return runs.start_run(self, store, integration_id, dagster_run_id=dagster_run_id, trigger=trigger,
                              is_run_alive=is_run_alive, owner=owner, direction=direction)

    def enumerate(
        self,
        store: Store,
        integration: Integration,
        run_id: int,
        *,
        log: Any = log_default,
        http_factory: Callable[[SyncSession], Any] | None = None,
        direction: str | None = None,
    ) -> EnumerationResult:
        return enumeration.enumerate_run(self, store, integration, run_id, log=log, http_factory=http_factory,
                                         direction=direction)

    def fail_enumeration(self, store: Store, integration: Integration, run_id: int, exc: BaseException) -> None:
        enumeration.fail_enumeration(self, store, integration, run_id, exc)

    def process_chunk(
        self,
        store: Store,
        run_id: int,
        chunk: int,
        *,
        reopen_failed: bool = False,
        dagster_run_id: str | None = None,
        log: Any = log_default,
        integration: Integration | None = None,
    ) -> ChunkResult:
        return chunks.process_chunk(self, store, run_id, chunk, reopen_failed=reopen_failed,
                                    dagster_run_id=dagster_run_id, log=log, integration=integration)

    def finish_leftover_chunks(
        self, store: Store, run_id: int, *, dagster_run_id: str | None = None, log: Any = log_default
    ) -> list[ChunkResult]:
        return chunks.finish_leftover_chunks(self, store, run_id, dagster_run_id=dagster_run_id, log=log)

    def run_listeners_once(self, store: Store, items: list[dict[str, Any]]) -> dict[int, Problem]:
        return chunks.run_listeners_once(self, store, items)

    def error_text(self, store: Store, integration_id: int, exc: BaseException) -> str:
        """``Type: message`` with every credential value of the integration masked (for item rows)."""
        return safe_error(exc, store.get_integration(integration_id))

    def try_reconcile(
        self, store: Store, run_id: int, *, log: Any = log_default, after_chunk: int | None = None
    ) -> ReconcileResult | None:
        return _reconcile.try_reconcile(self, store, run_id, log=log, after_chunk=after_chunk)

    def reconcile(self, store: Store, run_id: int, *, log: Any = log_default) -> ReconcileResult:
        return _reconcile.reconcile(self, store, run_id, log=log)

    def cursor_policy(self, provider: Provider) -> CursorPolicy:
        return _reconcile.cursor_policy(self, provider)

    def settle_run(self, conn: Connection, provider: Provider, run_id: int, counts: dict[str, int],
                   old: Any) -> Outcome:
        return _reconcile.settle_run(self, conn, provider, run_id, counts, old)

    def next_cursor(self, conn: Connection, provider: Provider, run_id: int, *, has_failures: bool) -> Any:
        return _reconcile.next_cursor(self, conn, provider, run_id, has_failures=has_failures)

    def resumable_run(self, store: Store, integration_id: int, dagster_run_id: str) -> Any:
        return runs.resumable_run(store, integration_id, dagster_run_id)

    def unfinished_runs(self, store: Store, integration_id: int) -> list[int]:
        return runs.unfinished_runs(store, integration_id)
