"""The sync engine: start a run, enumerate, process a chunk of items, reconcile.

These functions are what the Dagster ops call; they hold every rule about items and cursors so the
ops stay thin and the rules can be exercised (and re-run by operators) without a Dagster run.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, cast, select, text, update

from integrations_dagster.engine.background import BackgroundWriter
from integrations_dagster.engine.cursor import (
    COMPLETED,
    PAGE,
    STRICT,
    UNFINISHED,
    CursorPolicy,
    Counts,
    InvalidItem,
    ItemCheckpoint,
    Outcome,
    checkpoint_key,
    run_status,
    settle,
)
from integrations_dagster.errors import IntegrationsError, RateLimited, SyncListenerMustNotBeQueuedError, UnknownProvider
from integrations_dagster.authoring.events import InvalidPayload, InvalidPayloadError, SyncCompleted, SyncItemFailed
from integrations_dagster.engine.health import HealthPolicy, after_run
from integrations_dagster.authoring.integration import Integration
from integrations_dagster.authoring.listeners import ListenerRegistry, ListenerSpec, close_awaitable, is_queued
from integrations_dagster.authoring.provider import Provider
from integrations_dagster.authoring.session import SyncSession
from integrations_dagster.settings import SyncSettings
from integrations_dagster.store import Store, as_utc, utcnow
from integrations_dagster.store import models as m
from integrations_dagster.store.store import RUN_IN_FLIGHT, chunked

log_default = logging.getLogger("integrations_dagster")

#: ``sync_runs.error`` of a run whose cursor could not be computed (reconcile tries again).
CURSOR_ERROR = "cursor not advanced: "


def _is_cursor_error(error: str | None) -> bool:
    return bool(error) and error.startswith(CURSOR_ERROR)  # type: ignore[union-attr]

#: Callback telling whether the Dagster run that owns a sync run can still make progress:
#: True (queued/running), False (finished or unknown to the instance), None (cannot tell).
RunAliveCheck = Callable[[str | None], bool | None]


@dataclass
class StartResult:
    run_id: int | None
    skipped_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.run_id is None


@dataclass
class EnumerationResult:
    run_id: int
    items: int
    chunks: int


@dataclass
class ChunkResult:
    run_id: int
    chunk: int
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    wait_seconds: float = 0.0
    failed_items: list[tuple[int, str | None, str]] = field(default_factory=list)


@dataclass
class ReconcileResult:
    run_id: int
    integration_id: int
    provider_key: str
    final: bool
    changed: bool
    status: str
    cursor_before: Any
    cursor_after: Any
    items_total: int
    success_count: int
    failed_count: int
    skipped_count: int
    pending_count: int
    request_count: int = 0
    duration_seconds: float | None = None
    request_ids: list[int] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sync_run_id": self.run_id,
            "cursor_before": _display(self.cursor_before),
            "cursor_after": _display(self.cursor_after),
            "items_total": self.items_total,
            "success": self.success_count,
            "failed": self.failed_count,
            "skipped": self.skipped_count,
            "requests": self.request_count,
            "request_ids": _display(self.request_ids),
            "duration_seconds": round(self.duration_seconds or 0.0, 3),
        }


def _display(value: Any) -> str:
    import json

    return "null" if value is None else json.dumps(value, sort_keys=True, default=str)


class _Rollback(Exception):
    """Carries a staged listener's failure out of its transaction so the transaction rolls back."""

    def __init__(self, problem: tuple[BaseException, str]) -> None:
        super().__init__(str(problem[0]))
        self.problem = problem


class _EventTypes:
    """Resolves stored ``module:QualName`` strings back to event classes (cached)."""

    def __init__(self) -> None:
        self._cache: dict[str, type] = {}

    def resolve(self, name: str) -> type:
        cls = self._cache.get(name)
        if cls is None:
            module_name, _, qualname = name.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            cls = obj
            self._cache[name] = cls
        return cls


def run_alive(run: Any, is_run_alive: RunAliveCheck | None) -> bool | None:
    """Whether an in-flight sync run can still make progress: its recorded owner process gone from
    this host means dead (whatever Dagster says: a killed in-process run stays STARTED); else the
    Dagster run's answer; else the owner process still being there."""
    from integrations_dagster.engine.owner import owner_alive

    own = owner_alive(getattr(run, "owner_host", None), getattr(run, "owner_pid", None))
    alive = is_run_alive(run.dagster_run_id) if is_run_alive else None
    if own is False:
        return False
    return own if alive is None else alive


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
        self.settings = settings
        self.health = health or HealthPolicy()
        self.clock = clock
        self.sleep = sleep
        #: Extra keyword arguments for every ``ApiClient`` this engine builds (tests inject a
        #: transport or a no-wait ``sleep``; production leaves it empty).
        self.http_options: dict[str, Any] = {}
        self._types = _EventTypes()

    # --- helpers -------------------------------------------------------------------------
    def store(self, url: str | None = None) -> Store:
        return Store.for_url(url or self.settings.resolved_database_url())

    def provider(self, key: str) -> Provider:
        try:
            return self.providers[key]
        except KeyError:
            raise UnknownProvider(key, list(self.providers)) from None

    # --- starting a run (single flight) --------------------------------------------------
    def start_run(
        self,
        store: Store,
        integration_id: int,
        *,
        dagster_run_id: str | None,
        trigger: str = "manual",
        is_run_alive: RunAliveCheck | None = None,
        owner: Any = None,
    ) -> StartResult:
        """Create a sync run unless another run of this integration is still in flight.

        In-flight runs whose owner is known to be dead are cleaned up first: an abandoned
        enumeration is discarded (its items never counted); an abandoned processing run has its
        unfinished items failed so the cursor holds at them and an operator can retry or skip,
        and is reconciled before the new run reads the cursor (its ``cursor_before``).
        A run is dead when its recorded owner process (``owner``: ``_owner.RunOwner``, for runs
        executed outside the daemon) is gone from this host, or ``is_run_alive`` says so; an
        enumeration older than ``job_timeout`` is presumed dead only when neither can tell. A run
        reported alive is never discarded.
        """
        now = self.clock()
        abandoned: list[int] = []
        with store.begin() as conn:
            row = conn.execute(
                store.for_update(select(m.integrations).where(m.integrations.c.id == integration_id))
            ).first()
            if row is None:
                from integrations_dagster.errors import IntegrationNotFound

                raise IntegrationNotFound(integration_id)
            for run in conn.execute(
                select(m.sync_runs)
                .where(m.sync_runs.c.integration_id == integration_id)
                .where(m.sync_runs.c.status.in_(RUN_IN_FLIGHT))
            ).all():
                if run.dagster_run_id is not None and run.dagster_run_id == dagster_run_id:
                    continue
                alive = run_alive(run, is_run_alive)
                stale = as_utc(run.started_at) < now - timedelta(seconds=self.settings.job_timeout)
                if run.status == "enumerating" and (alive is False or (alive is None and stale)):
                    self._discard_enumeration(conn, run.id, "abandoned: enumeration never finished", now)
                    continue
                if run.status == "processing" and alive is False:
                    self._fail_unfinished(conn, run.id, "abandoned: the Dagster run ended before this item ran", now)
                    abandoned.append(run.id)
                    continue
                reason = (
                    f"integration {integration_id} already has sync run {run.id} in flight "
                    f"(status {run.status}, Dagster run {run.dagster_run_id}); this sync is skipped"
                )
                skipped_id = conn.execute(
                    m.sync_runs.insert()
                    .values(
                        integration_id=integration_id,
                        dagster_run_id=dagster_run_id,
                        status="skipped",
                        trigger=trigger,
                        cursor_before=row.cursor,
                        cursor_after=row.cursor,
                        error=reason,
                        started_at=now,
                        finished_at=now,
                    )
                    .returning(m.sync_runs.c.id)
                ).scalar_one()
                del skipped_id
                return StartResult(run_id=None, skipped_reason=reason)
            run_id = conn.execute(
                m.sync_runs.insert()
                .values(
                    integration_id=integration_id,
                    dagster_run_id=dagster_run_id,
                    status="enumerating",
                    trigger=trigger,
                    cursor_before=row.cursor,
                    started_at=now,
                    owner_host=getattr(owner, "host", None),
                    owner_pid=getattr(owner, "pid", None),
                )
                .returning(m.sync_runs.c.id)
            ).scalar_one()
        for old in abandoned:  # settle the runs we just failed: partial/failed with counts, cursor held
            self.reconcile(store, old)
        if abandoned:
            # The new run has not read the cursor yet: it starts from the one the abandoned runs
            # just earned, so what they finished is not delivered again.
            with store.begin() as conn:
                cursor = conn.execute(
                    select(m.integrations.c.cursor).where(m.integrations.c.id == integration_id)
                ).scalar()
                store.transition_run(conn, int(run_id), "enumerating", "take the cursor", cursor_before=cursor)
        return StartResult(run_id=int(run_id))

    def _discard_enumeration(self, conn: Any, run_id: int, reason: str, now: datetime) -> bool:
        """enumerating -> failed (compare-and-set), then its dispatched rows go; False if the run
        was no longer enumerating (nothing changed). The session only inserts while the run is
        enumerating (checked under a lock), so no row comes back after this."""
        done = conn.execute(
            update(m.sync_runs)
            .where(m.sync_runs.c.id == run_id, m.sync_runs.c.status == "enumerating")
            .values(status="failed", error=reason, finished_at=now, items_total=0)
        ).rowcount
        if done:
            conn.execute(m.sync_items.delete().where(m.sync_items.c.run_id == run_id))
        return bool(done)

    def _fail_unfinished(self, conn: Any, run_id: int, reason: str, now: datetime) -> int:
        return conn.execute(
            update(m.sync_items)
            .where(m.sync_items.c.run_id == run_id)
            .where(m.sync_items.c.status.in_(("pending", "processing")))
            .values(status="failed", last_error=reason, finished_at=now)
        ).rowcount

    # --- enumeration ---------------------------------------------------------------------
    def enumerate(
        self,
        store: Store,
        integration: Integration,
        run_id: int,
        *,
        log: Any = log_default,
        http_factory: Callable[[SyncSession], Any] | None = None,
    ) -> EnumerationResult:
        """Run the provider; on any exception discard what it dispatched and fail the run."""
        provider = self.provider(integration.provider_key)
        session = SyncSession(store=store, run_id=run_id, integration=integration, settings=self.settings, log=log,
                              chunk_size=provider.chunk_size)
        if http_factory is not None:
            session._http_factory = lambda: http_factory(session)
        try:
            provider.enumerate(integration, session)
            session.finish()  # no dispatch is accepted after this (e.g. from a helper thread)
        except BaseException as exc:
            session.stop_writing()  # no batch may land after the discard below
            self.fail_enumeration(store, integration, run_id, exc)
            raise
        finally:
            session.close()
        now = self.clock()
        with store.begin() as conn:
            # Raises SyncRunDiscarded when the run was discarded meanwhile (presumed dead): what it
            # dispatched is gone, so it must not go on to processing and reconciliation.
            store.transition_run(
                conn, run_id, "enumerating", "finish its enumeration",
                status="processing", items_total=session.dispatched, chunks=session.chunks, enumerated_at=now,
            )
        log.info(f"{integration}: enumerated {session.dispatched} items in {session.chunks} chunks (sync run {run_id})")
        return EnumerationResult(run_id=run_id, items=session.dispatched, chunks=session.chunks)

    def fail_enumeration(self, store: Store, integration: Integration, run_id: int, exc: BaseException) -> None:
        from integrations_dagster.security.redaction import safe_error

        now = self.clock()
        auth = bool(getattr(exc, "auth_failure", False))
        message = safe_error(exc, integration)
        with store.begin() as conn:
            if not self._discard_enumeration(conn, run_id, f"enumeration failed: {message}", now):
                return  # already discarded (or settled) by another process: it owns the outcome
            conn.execute(update(m.sync_runs).where(m.sync_runs.c.id == run_id).values(auth_failure=auth))
            self._apply_health(conn, integration.id, "failed", auth, now)

    def _apply_health(self, conn: Any, integration_id: int, status: str, auth: bool, now: datetime) -> None:
        row = conn.execute(select(m.integrations).where(m.integrations.c.id == integration_id)).first()
        if row is None:
            return
        provider = self.providers.get(row.provider_key)
        values = after_run(
            integration=row,
            run_status=status,
            auth_failure=auth,
            now=now,
            default_interval=provider.default_sync_interval if provider else None,
            policy=self.health,
        )
        if values:
            values["updated_at"] = now
            conn.execute(update(m.integrations).where(m.integrations.c.id == integration_id).values(**values))

    # --- processing a chunk --------------------------------------------------------------
    def process_chunk(
        self,
        store: Store,
        run_id: int,
        chunk: int,
        *,
        reopen_failed: bool = False,
        dagster_run_id: str | None = None,
        log: Any = log_default,
    ) -> ChunkResult:
        """Run listeners for the chunk's unfinished items, retrying inside the step.

        Returns with ``waiting > 0`` when the next retry is further away than ``inline_wait_max``;
        the caller hands the step back to Dagster for that long (other steps run meanwhile).
        """
        result = ChunkResult(run_id=run_id, chunk=chunk)
        with self._chunk_claim(store, run_id, chunk) as claimed:
            if not claimed:  # another step holds this chunk right now: it will finish it
                log.info(f"sync run {run_id} chunk {chunk}: already being processed elsewhere")
                return result
            items = self._claim(store, run_id, chunk, reopen_failed=reopen_failed, dagster_run_id=dagster_run_id)
            if not items:
                return result
            from integrations_dagster.authoring.context import SyncContext, http_factory_for, sync_context

            integration = store.get_integration(int(store.get_run(run_id)["integration_id"]))
            provider = self.providers.get(integration.provider_key)
            factory = http_factory_for(self, store, provider, integration, run_id, for_items=True) if provider else None
            from integrations_dagster.security.redaction import secret_values

            with sync_context(SyncContext(integration=integration, sync_run_id=run_id, store=store, _factory=factory)):
                return self._process_items(store, run_id, chunk, items, result, log, secret_values(integration))

    @contextmanager
    def _chunk_claim(self, store: Store, run_id: int, chunk: int) -> Iterator[bool]:
        """Hold the chunk for this step: yields False if another step holds it.

        PostgreSQL: a session advisory lock on (run id, chunk) held on its own connection for
        the step's duration. Claiming a chunk then costs one lock instead of a write per item
        (items stay ``pending`` while they run), and a worker that dies releases it with its
        connection, leaving its unfinished items pending for the next attempt. SQLite has no such
        lock: there ``_claim`` marks the items ``processing`` (one writer at a time anyway).
        """
        if store.is_sqlite:
            yield True
            return
        conn = store.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
            held = bool(got.scalar())
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:run, :chunk)"), {"run": run_id, "chunk": chunk})
                    conn.commit()
        except BaseException:
            conn.invalidate()  # never hand a connection that may still hold the lock back to the pool
            raise
        finally:
            conn.close()

    def run_listeners_once(
        self, store: Store, items: list[dict[str, Any]]
    ) -> dict[int, tuple[BaseException, str]]:
        """Run the listeners of already-claimed items once, now (operator retries).

        Same rules as a chunk step: the listener context (``current_sync()``) of each item's
        integration, queued listeners refused; returns failures by item id as (exception, kind).
        """
        from integrations_dagster.authoring.context import SyncContext, http_factory_for, sync_context

        outcomes: dict[int, tuple[BaseException, str]] = {}
        by_integration: dict[int, list[dict[str, Any]]] = {}
        for it in items:
            by_integration.setdefault(int(it["integration_id"]), []).append(it)
        for integration_id, group in by_integration.items():
            integration = store.get_integration(integration_id)
            provider = self.providers.get(integration.provider_key)
            factory = http_factory_for(self, store, provider, integration, group[0]["run_id"], for_items=True) \
                if provider else None
            ctx = SyncContext(integration=integration, sync_run_id=group[0]["run_id"], store=store, _factory=factory)
            with sync_context(ctx):
                outcomes.update(self._run_listeners(store, group))
        return outcomes

    def error_text(self, store: Store, integration_id: int, exc: BaseException) -> str:
        """``Type: message`` with every credential value of the integration masked (for item rows)."""
        from integrations_dagster.security.redaction import safe_error

        return safe_error(exc, store.get_integration(integration_id))

    def _process_items(
        self,
        store: Store,
        run_id: int,
        chunk: int,
        items: list[dict[str, Any]],
        result: ChunkResult,
        log: Any,
        secrets: list[str] = (),  # type: ignore[assignment]
    ) -> ChunkResult:
        settings = self.settings
        # PostgreSQL: each batch's status write runs in the background while the next batch's
        # listeners run; drained before the step decides anything (see BackgroundWriter).
        writer = None if store.is_sqlite else BackgroundWriter("outcome-writer")
        try:
            while items:
                now = self.clock()
                ready, waiting = [], []
                for it in items:
                    due = it["next_attempt_at"] is None or as_utc(it["next_attempt_at"]) <= now
                    (ready if due else waiting).append(it)
                size = settings.listener_batch_size
                for start in range(0, len(ready), size):
                    part = ready[start:start + size]
                    successes, changes = self._run_batch(store, part, now, result, waiting, secrets)
                    if writer is not None:
                        writer.submit(self._write_outcomes, store, successes, changes, now)
                    else:
                        self._write_outcomes(store, successes, changes, now)
                    result.succeeded += len(successes)
                if writer is not None:
                    writer.drain()
                items = waiting
                if not items:
                    break
                next_at = min(as_utc(it["next_attempt_at"]) for it in items)
                wait = max(0.0, (next_at - self.clock()).total_seconds())
                if wait > settings.inline_wait_max:
                    result.waiting = len(items)
                    result.wait_seconds = wait
                    log.info(f"sync run {run_id} chunk {chunk}: {len(items)} items wait {wait:.1f} s for a retry")
                    return result
                if wait > 0:
                    self.sleep(wait)
            return result
        finally:
            if writer is not None:
                writer.stop()

    def _run_batch(
        self,
        store: Store,
        part: list[dict[str, Any]],
        now: datetime,
        result: ChunkResult,
        waiting: list[dict[str, Any]],
        secrets: list[str],
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """Run the listeners of ``part``; returns (succeeded ids, changes for the rest).

        Items to retry get their new state in place and are appended to ``waiting``.
        """
        outcomes = self._run_listeners(store, part)
        successes: list[int] = []
        changes: list[dict[str, Any]] = []
        for it in part:
            outcome = outcomes.get(it["id"])
            if outcome is None:
                successes.append(it["id"])
                continue
            exc, kind = outcome
            change = self._after_failure(it, exc, kind, now)
            if secrets:  # a listener's message may quote a credential: it must not reach the item row
                from integrations_dagster.security.redaction import scrub

                change["last_error"] = scrub(change["last_error"], list(secrets))
            changes.append(change)
            if change["status"] == "failed":
                result.failed += 1
                result.failed_items.append((it["id"], it["external_id"], change["last_error"]))
            else:
                it.update(change)
                waiting.append(it)
        return successes, changes

    def _claim(
        self, store: Store, run_id: int, chunk: int, *, reopen_failed: bool, dagster_run_id: str | None
    ) -> list[dict[str, Any]]:
        """Take the chunk's unfinished items (and its failed ones when re-executing).

        Called under ``_chunk_claim``, so no other step is working on this chunk.
        """
        now = self.clock()
        t = m.sync_items
        with store.begin() as conn:
            run = conn.execute(store.for_update(
                select(m.sync_runs.c.status, m.sync_runs.c.enumerated_at).where(m.sync_runs.c.id == run_id))).first()
            if run is None or run.enumerated_at is None or run.status not in ("processing", "partial", "failed",
                                                                              "success"):
                return []  # discarded (or never enumerated): nothing of it may run
            if reopen_failed:
                reopened = conn.execute(
                    update(t)
                    .where(t.c.run_id == run_id, t.c.chunk == chunk, t.c.status == "failed")
                    .values(
                        status="pending",
                        attempts=0,
                        deferrals=0,
                        first_attempt_at=None,
                        next_attempt_at=None,
                        failure_notified=False,
                        finished_at=None,
                    )
                ).rowcount
                if reopened:
                    store.transition_run(conn, run_id, ("processing", "partial", "failed", "success"),
                                         "reopen its failed items",
                                         status="processing", finished_at=None, dagster_run_id=dagster_run_id)
            stmt = (
                select(
                    t.c.id,
                    t.c.status,
                    t.c.attempts,
                    t.c.deferrals,
                    t.c.first_attempt_at,
                    t.c.next_attempt_at,
                    t.c.event_type,
                    t.c.external_id,
                )  # no payloads: they are read per listener batch, and not at all for staged listeners
                .where(t.c.run_id == run_id, t.c.chunk == chunk, t.c.status.in_(("pending", "processing")))
                .order_by(t.c.id)
            )
            result = conn.execute(stmt)
            keys = list(result.keys())
            rows = [dict(zip(keys, r)) for r in result]  # Row._mapping per row costs ~10x more
            if store.is_sqlite:  # PostgreSQL holds the chunk's advisory lock instead (_chunk_claim)
                for ids in chunked([r["id"] for r in rows], 1000):
                    conn.execute(update(t).where(store.id_in(t.c.id, ids)).values(status="processing", claimed_at=now))
        return rows

    def _run_listeners(self, store: Store, items: list[dict[str, Any]]) -> dict[int, tuple[BaseException, str]]:
        """Run every listener for ``items``; returns failures by item id as (exception, kind).

        kind is ``retry`` (genuine failure), ``defer`` (RateLimited) or ``fatal`` (no retry helps).
        Payloads are read and parsed only for event types that have a listener needing event
        objects: types whose listeners are all staged never leave the database.
        """
        failures: dict[int, tuple[BaseException, str]] = {}
        by_type: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            by_type.setdefault(it["event_type"], []).append(it)
        for type_name, group in by_type.items():
            try:
                cls = self._types.resolve(type_name)
            except Exception as exc:  # the event class is gone: no retry will bring it back
                for it in group:
                    failures[it["id"]] = (exc, "fatal")
                continue
            specs = self.listeners.for_type(cls)
            invalid = issubclass(cls, InvalidPayload)
            alive: list[tuple[dict[str, Any], Any]]
            if invalid or any(not spec.staged for spec in specs):
                alive = []
                payloads = self._payloads(store, group)
                for it in group:
                    try:
                        raw = payloads[it["id"]]
                        event = cls.model_validate_json(raw) if isinstance(raw, (str, bytes)) else cls.model_validate(raw)
                    except Exception as exc:  # the stored payload no longer matches its event class
                        failures[it["id"]] = (exc, "fatal")
                        continue
                    if invalid:  # recorded at enumeration; only a skip gets past it
                        failures[it["id"]] = (InvalidPayloadError(event.error), "fatal")
                        continue
                    alive.append((it, event))
            else:
                alive = [(it, None) for it in group]
            for spec in specs:
                if not alive:
                    break
                if is_queued(spec):
                    err = SyncListenerMustNotBeQueuedError(
                        f"listener {spec.name} is queued/async: sync-item listeners must run synchronously"
                    )
                    for it, _ in alive:
                        failures[it["id"]] = (err, "fatal")
                    alive = []
                    break
                if spec.staged:
                    alive = self._isolating(alive, failures, lambda pairs, spec=spec: self._call_staged(
                        spec, store, cls, pairs))
                elif spec.batch:
                    alive = self._isolating(alive, failures, lambda pairs, spec=spec: self._call(
                        spec, [ev for _, ev in pairs]))
                else:
                    survivors = []
                    for it, ev in alive:
                        problem = self._call(spec, ev)
                        if problem is None:
                            survivors.append((it, ev))
                        else:
                            failures[it["id"]] = problem
                    alive = survivors
        return failures

    @staticmethod
    def _payloads(store: Store, group: list[dict[str, Any]]) -> dict[int, Any]:
        """Stored payloads by item id: from the item rows when they carry them, else one query."""
        out: dict[int, Any] = {}
        missing: list[int] = []
        for it in group:
            if it.get("payload_json") is not None:
                out[it["id"]] = it["payload_json"]
            elif "payload" in it:
                out[it["id"]] = it["payload"]
            else:
                missing.append(it["id"])
        if missing:
            t = m.sync_items
            with store.engine.connect() as conn:
                for ids in chunked(missing, 1000):
                    out.update(conn.execute(select(t.c.id, cast(t.c.payload, Text)).where(store.id_in(t.c.id, ids))).all())
        return out

    def _call(self, spec: ListenerSpec, arg: Any) -> tuple[BaseException, str] | None:
        try:
            result = spec.fn(arg)
        except RateLimited as exc:
            return exc, "defer"
        except Exception as exc:
            return exc, "retry"
        if close_awaitable(result):
            return (
                SyncListenerMustNotBeQueuedError(
                    f"listener {spec.name} returned an awaitable: sync-item listeners must run synchronously"
                ),
                "fatal",
            )
        return None

    def _call_staged(
        self, spec: ListenerSpec, store: Store, cls: type, pairs: list[tuple[dict[str, Any], Any]]
    ) -> tuple[BaseException, str] | None:
        """One staged call in a transaction of its own: committed if the listener returns."""
        from integrations_dagster.authoring.staged import StagedBatch

        events = [ev for _, ev in pairs] if all(ev is not None for _, ev in pairs) else None
        try:
            with store.begin() as conn:
                problem = self._call(spec, StagedBatch(conn, [it["id"] for it, _ in pairs], cls, events=events))
                if problem is not None:
                    raise _Rollback(problem)
        except _Rollback as rollback:
            return rollback.problem
        except Exception as exc:  # the commit itself failed (e.g. a deferred constraint)
            return exc, "retry"
        return None

    @staticmethod
    def _isolating(
        alive: list[tuple[dict[str, Any], Any]],
        failures: dict[int, tuple[BaseException, str]],
        call: Callable[[list[tuple[dict[str, Any], Any]]], tuple[BaseException, str] | None],
    ) -> list[tuple[dict[str, Any], Any]]:
        """Call once for the whole batch; if that fails, once per item to isolate the culprit(s)."""
        problem = call(alive)
        if problem is None:
            return alive
        if problem[1] in ("defer", "fatal"):
            for it, _ in alive:
                failures[it["id"]] = problem
            return []
        if len(alive) == 1:
            failures[alive[0][0]["id"]] = problem
            return []
        survivors = []
        for pair in alive:
            single = call([pair])
            if single is None:
                survivors.append(pair)
            else:
                failures[pair[0]["id"]] = single
        return survivors

    def _after_failure(self, it: dict[str, Any], exc: BaseException, kind: str, now: datetime) -> dict[str, Any]:
        s = self.settings
        first = as_utc(it["first_attempt_at"]) or now
        attempts = it["attempts"] + (0 if kind == "defer" else 1)
        deferrals = it["deferrals"] + (1 if kind == "defer" else 0)
        error = f"{type(exc).__name__}: {exc}"[:4000]
        change: dict[str, Any] = {
            "b_id": it["id"],
            "attempts": attempts,
            "deferrals": deferrals,
            "first_attempt_at": first,
            "last_error": error,
        }
        if kind == "fatal" or (kind == "retry" and attempts >= s.item_tries):
            change.update(status="failed", next_attempt_at=None, finished_at=now)
            return change
        # A deferral waits at least min_deferral: RateLimited(0) must not retry in a busy loop.
        wait = max(exc.retry_after, s.min_deferral) if isinstance(exc, RateLimited) else s.backoff_for(attempts)
        next_at = now + timedelta(seconds=wait)
        if next_at > first + timedelta(seconds=s.item_retry_window):
            change.update(
                status="failed",
                next_attempt_at=None,
                finished_at=now,
                last_error=f"{error} (retry window of {s.item_retry_window:g} s exhausted)"[:4000],
            )
            return change
        change.update(status="pending", next_attempt_at=next_at, finished_at=None)
        return change

    def _write_outcomes(self, store: Store, successes: list[int], changes: list[dict[str, Any]], now: datetime) -> None:
        t = m.sync_items
        with store.begin() as conn:
            for ids in chunked(successes, 1000):
                conn.execute(
                    update(t)
                    .where(store.id_in(t.c.id, ids))
                    .values(status="success", attempts=t.c.attempts + 1, finished_at=now, last_error=None,
                            next_attempt_at=None)
                )
            if changes:
                conn.execute(
                    update(t)
                    .where(t.c.id == bindparam("b_id"))
                    .values(
                        status=bindparam("status"),
                        attempts=bindparam("attempts"),
                        deferrals=bindparam("deferrals"),
                        first_attempt_at=bindparam("first_attempt_at"),
                        next_attempt_at=bindparam("next_attempt_at"),
                        finished_at=bindparam("finished_at"),
                        last_error=bindparam("last_error"),
                    ),
                    changes,
                )

    # --- reconciliation ------------------------------------------------------------------
    def try_reconcile(
        self, store: Store, run_id: int, *, log: Any = log_default, after_chunk: int | None = None
    ) -> ReconcileResult | None:
        """Reconcile only if no item of the run is pending or processing (indexed probes first).

        Chunk steps call this as they end (``after_chunk`` = their chunk): all but the last find
        unfinished items at once and skip the locking and counting that a full reconcile does.
        The first probe looks at the next chunk only (usually not yet run, so its first index
        entry answers); only if that one is finished does the probe cover the whole run, whose
        index holds one dead entry per item that has finished.
        """
        t = m.sync_items
        unfinished = t.c.status.in_(("pending", "processing"))
        with store.engine.connect() as conn:
            busy = None
            if after_chunk is not None:
                busy = conn.execute(
                    select(t.c.id).where(t.c.run_id == run_id, t.c.chunk == after_chunk + 1, unfinished).limit(1)
                ).first()
            if busy is None:
                busy = conn.execute(select(t.c.id).where(t.c.run_id == run_id, unfinished).limit(1)).first()
        if busy is not None:
            return None
        return self.reconcile(store, run_id, log=log)

    def reconcile(self, store: Store, run_id: int, *, log: Any = log_default) -> ReconcileResult:
        """Settle a run from its items. Safe to call at any time, any number of times.

        While any item is pending or processing nothing changes. Once all are finished: the run's
        status and counts are written, the cursor advances (see ``next_cursor``), health and the
        next sync time are updated, and events fire, only when something actually changed.
        """
        now = self.clock()
        to_notify: list[dict[str, Any]] = []
        with store.begin() as conn:
            run = conn.execute(store.for_update(select(m.sync_runs).where(m.sync_runs.c.id == run_id))).first()
            if run is None:
                raise LookupError(f"sync run {run_id} not found")
            integ = conn.execute(
                store.for_update(select(m.integrations).where(m.integrations.c.id == run.integration_id))
            ).first()
            if integ is None:
                raise LookupError(f"integration {run.integration_id} of sync run {run_id} not found")
            provider = self.provider(integ.provider_key)
            counts = store.item_counts(conn, run_id)
            unfinished = counts["pending"] + counts["processing"]
            total = sum(counts.values())
            base = dict(
                run_id=run_id,
                integration_id=integ.id,
                provider_key=integ.provider_key,
                cursor_before=run.cursor_before,
                items_total=total,
                success_count=counts["success"],
                failed_count=counts["failed"],
                skipped_count=counts["skipped"],
                pending_count=unfinished,
                request_count=run.request_count,
            )
            if run.status in ("enumerating", "skipped") or (run.status == "failed" and run.enumerated_at is None):
                return ReconcileResult(final=run.status != "enumerating", changed=False, status=run.status,
                                       cursor_after=run.cursor_after, **base)
            if unfinished:
                if run.status != "processing":
                    store.transition_run(conn, run_id, run.status, "reopen", status="processing", finished_at=None)
                return ReconcileResult(final=False, changed=False, status="processing",
                                       cursor_after=None, **base)
            status = run_status(Counts.of(counts))
            settled = (
                run.finished_at is not None
                and run.status == status
                and (run.success_count, run.failed_count, run.skipped_count)
                == (counts["success"], counts["failed"], counts["skipped"])
                and not _is_cursor_error(run.error)  # a run that failed to compute its cursor tries again
            )
            if settled:
                # Nothing moved since this run was settled (items only leave a settled state by
                # changing the counts: failed -> success/skipped/pending): same answer, no writes,
                # no events, and no re-reading of every checkpoint.
                return ReconcileResult(final=True, changed=False, status=status, cursor_after=run.cursor_after,
                                       duration_seconds=(as_utc(run.finished_at) - as_utc(run.started_at))
                                       .total_seconds(), **base)
            # The cursor rule is a pure function (_cursor.settle); it never raises on data: items whose
            # checkpoint cannot be ordered fail here, a reducer that raises fails the run.
            outcome = self.settle_run(conn, provider, run_id, counts, integ.cursor)
            status, cursor_after = outcome.status, outcome.cursor
            if outcome.invalid:
                self._fail_invalid_checkpoints(conn, run_id, outcome.invalid, now, log)
                counts = {**counts, "success": outcome.counts.success, "failed": outcome.counts.failed}
                base.update(success_count=counts["success"], failed_count=counts["failed"])
            run_error = run.error if not _is_cursor_error(run.error) else None  # a cursor error clears once fixed
            if outcome.error:
                run_error = CURSOR_ERROR + outcome.error
            changed = not (
                run.status == status
                and run.success_count == counts["success"]
                and run.failed_count == counts["failed"]
                and run.skipped_count == counts["skipped"]
                and run.cursor_after == cursor_after
                and run.finished_at is not None
                and run.error == run_error
            )
            finished_at = as_utc(run.finished_at) if not changed and run.finished_at else now
            duration = (finished_at - as_utc(run.started_at)).total_seconds()
            if changed:
                store.transition_run(
                    conn, run_id, run.status, "be settled",
                    **dict(
                        status=status,
                        items_total=total,
                        success_count=counts["success"],
                        failed_count=counts["failed"],
                        skipped_count=counts["skipped"],
                        cursor_after=cursor_after,
                        finished_at=finished_at,
                        error=run_error,
                    ),
                )
                if cursor_after != integ.cursor:
                    conn.execute(
                        update(m.integrations)
                        .where(m.integrations.c.id == integ.id)
                        .values(cursor=cursor_after, updated_at=now)
                    )
                if run.status != status or run.finished_at is None:
                    self._apply_health(conn, integ.id, status, bool(run.auth_failure), now)
                if counts["failed"]:
                    t = m.sync_items
                    rows = conn.execute(
                        select(t.c.id, t.c.external_id, t.c.attempts, t.c.last_error)
                        .where(t.c.run_id == run_id, t.c.status == "failed", t.c.failure_notified.is_(False))
                    ).all()
                    to_notify = [dict(r._mapping) for r in rows]
                    for ids in chunked([r["id"] for r in to_notify], 1000):
                        conn.execute(update(t).where(store.id_in(t.c.id, ids)).values(failure_notified=True))
        result = ReconcileResult(final=True, changed=changed, status=status, cursor_after=cursor_after,
                                 duration_seconds=duration, **base)
        if changed and run.request_count:
            with store.engine.connect() as conn:
                result.request_ids = list(conn.execute(
                    select(m.requests_log.c.id).where(m.requests_log.c.sync_run_id == run_id)
                    .order_by(m.requests_log.c.id).limit(200)).scalars())
        if changed:
            log.info(
                f"sync run {run_id}: {status}; {counts['success']} succeeded, {counts['failed']} failed, "
                f"{counts['skipped']} skipped; cursor {_display(integ.cursor)} -> {_display(cursor_after)}"
            )
            for item in to_notify:
                self._fire(SyncItemFailed(integration_id=integ.id, provider_key=integ.provider_key,
                                          sync_run_id=run_id, item_id=item["id"], external_id=item["external_id"],
                                          attempts=item["attempts"], error=item["last_error"]), log, store)
            if status == "success":
                self._fire(SyncCompleted(integration_id=integ.id, provider_key=integ.provider_key, sync_run_id=run_id,
                                         cursor_before=run.cursor_before, cursor_after=cursor_after,
                                         items_total=total, success_count=counts["success"],
                                         skipped_count=counts["skipped"]), log, store)
        return result

    def cursor_policy(self, provider: Provider) -> CursorPolicy:
        default = type(provider).reduce_checkpoints is Provider.reduce_checkpoints
        return CursorPolicy(rule=self.settings.cursor_rule, ordered=provider.has_ordered_checkpoints(),
                            reduce=None if default else provider.reduce_checkpoints)

    def settle_run(self, conn: Any, provider: Provider, run_id: int, counts: dict[str, int], old: Any) -> Outcome:
        """Read what the cursor rule needs and apply it (``_cursor.settle``); never raises on data.

        Held (failed) items are read whole; completed checkpoints are streamed in id order. With
        the default reducer on PostgreSQL, when every checkpoint is a JSON string whose text order
        is its order (plain strings, or ISO-8601 timestamps all in one ``...Z`` shape), the
        database computes the maximum itself and only that value reaches ``settle``.
        """
        t = m.sync_items
        policy = self.cursor_policy(provider)
        c = Counts.of(counts)
        if c.unfinished:
            return settle(c, [], [], old_cursor=old, policy=policy)
        held: list[ItemCheckpoint] = []
        if c.failed:
            held = [
                ItemCheckpoint(int(i), st, cp, ext) for i, st, cp, ext in conn.execute(
                    select(t.c.id, t.c.status, t.c.checkpoint, t.c.external_id)
                    .where(t.c.run_id == run_id, t.c.status.notin_(COMPLETED + UNFINISHED))
                )
            ]
        if (
            conn.dialect.name == "postgresql"
            and policy.reduce is None
            and (old is None or isinstance(old, str))
            and all(isinstance(h.checkpoint, str) or h.checkpoint is None for h in held)
        ):
            below = None
            if policy.ordered and policy.rule != STRICT and held and all(h.checkpoint is not None for h in held):
                below = min((h.checkpoint for h in held), key=checkpoint_key)
            found, top = self._max_string_checkpoint(conn, run_id, below)
            if found:
                top_items = [ItemCheckpoint(0, "success", top)] if top is not None else []
                return settle(c, held, top_items, old_cursor=old, policy=policy)

        def completed() -> Iterator[ItemCheckpoint]:
            stmt = (
                select(t.c.id, t.c.status, t.c.checkpoint)
                .where(t.c.run_id == run_id, t.c.status.in_(COMPLETED))
                .order_by(t.c.id)
                .execution_options(yield_per=PAGE)
            )
            for part in conn.execute(stmt).partitions():
                for i, st, cp in part:
                    yield ItemCheckpoint(int(i), st, cp)

        return settle(c, held, completed(), old_cursor=old, policy=policy)

    def next_cursor(self, conn: Any, provider: Provider, run_id: int, *, has_failures: bool) -> Any:
        """The cursor a finished run earns before the monotonic guard (``settle``'s candidate).

        - No failures: the reduction of every completed item's checkpoint.
        - Failures, ``cursor_rule="strict"`` or a structured cursor: None (the cursor stays).
        - Failures, ordered checkpoints: the low-water mark, i.e. the reduction of completed
          checkpoints strictly below the smallest checkpoint of any failed item.
        """
        from sqlalchemy import func

        t = m.sync_items
        counts = {st: int(n) for st, n in conn.execute(
            select(t.c.status, func.count()).where(t.c.run_id == run_id).group_by(t.c.status))}
        for st in UNFINISHED:
            counts.pop(st, None)
        if has_failures and not counts.get("failed"):
            counts["failed"] = 1
        return self.settle_run(conn, provider, run_id, counts, None).candidate

    def _fail_invalid_checkpoints(
        self, conn: Any, run_id: int, invalid: tuple[InvalidItem, ...], now: datetime, log: Any
    ) -> None:
        """Fail completed items whose checkpoint cannot be ordered (they then hold the cursor)."""
        t = m.sync_items
        conn.execute(
            update(t)
            .where(t.c.id == bindparam("b_id"), t.c.status == "success")
            .values(status="failed", last_error=bindparam("b_error"), finished_at=now, next_attempt_at=None,
                    failure_notified=False),
            [{"b_id": i.item_id, "b_error": i.message} for i in invalid],
        )
        log.warning(f"sync run {run_id}: {len(invalid)} items failed: {invalid[0].message}")

    @staticmethod
    def _max_string_checkpoint(conn: Any, run_id: int, below: str | None) -> tuple[bool, Any]:
        """The default reducer (the maximum) done by PostgreSQL when text order is checkpoint order.

        Python's order over plain strings is code point order, and so is ``COLLATE "C"`` over UTF-8
        text. ISO-8601 timestamps with a time zone order by instant (``_cursor.checkpoint_key``),
        which is text order only when they all share one shape (``YYYY-MM-DDTHH:MM:SS[.f]Z`` of one
        length); any other mix (``...00Z`` with ``...00.5Z``, offsets), numbers, mixed types or a
        string PostgreSQL cannot hold as text answers ``(False, None)`` and Python reduces.
        """
        from sqlalchemy.exc import DBAPIError

        # Each row's JSON is parsed once (the subquery; OFFSET 0 keeps PostgreSQL from inlining it).
        is_str = "jt = 'string'"
        # Timestamp-like: what every ISO-8601 timestamp has ('-' 5th, 'T'/'t'/' ' 11th). Those order
        # as text only in the one-length UTC form YYYY-MM-DDTHH:MM:SS[.digits]Z (separators checked
        # by LIKE; a wrong digit in the date or time decides text and instant order alike before
        # the fraction, so only the fraction's digits need a look).
        dateish = f"{is_str} AND substr(s, 5, 1) = '-' AND substr(s, 11, 1) IN ('T', 't', ' ')"
        zform = ("(s LIKE '____-__-__T__:__:__Z' OR (s LIKE '____-__-__T__:__:__._%Z' "
                 "AND ltrim(substr(s, 21, length(s) - 21), '0123456789') = ''))")
        sql = text(
            "SELECT count(*) FILTER (WHERE jt NOT IN ('string', 'null')), "
            f"count(*) FILTER (WHERE {is_str}), count(*) FILTER (WHERE {dateish}), "
            f"count(*) FILTER (WHERE {dateish} AND {zform}), "
            f"min(length(s)) FILTER (WHERE {dateish}), max(length(s)) FILTER (WHERE {dateish}), "
            f"max(s COLLATE \"C\") FILTER (WHERE {is_str} AND status IN ('success', 'skipped', 'superseded')"
            + (" AND s COLLATE \"C\" < :below" if below is not None else "")
            + ") FROM (SELECT status, json_typeof(checkpoint) AS jt, checkpoint #>> '{}' AS s "
            "FROM sync_items WHERE run_id = :run_id OFFSET 0) AS cp"
        )
        try:
            with conn.begin_nested():
                others, strings, dates, zforms, shortest, longest, top = conn.execute(
                    sql, {"run_id": run_id, "below": below}).one()
        except DBAPIError:  # e.g. a \u0000 escape, which text cannot hold
            return False, None
        if others:
            return False, None
        if dates and not (dates == strings == zforms and shortest == longest):
            return False, None
        return True, top

    def _fire(self, event: Any, log: Any, store: Store | None = None) -> None:
        for spec in self.listeners.for_type(type(event)):
            try:
                result = spec.fn(event)
                close_awaitable(result)
            except Exception as exc:  # a notification listener must not undo a reconciliation
                log.warning(f"listener {spec.name} for {type(event).__name__} raised: "
                            f"{self._redacted(exc, store, getattr(event, 'integration_id', None))}")

    @staticmethod
    def _redacted(exc: BaseException, store: Store | None, integration_id: int | None) -> str:
        """``repr(exc)`` with the integration's credentials masked (they may be in the message)."""
        from integrations_dagster.security.redaction import scrub, secret_values

        text = repr(exc)
        if store is None or integration_id is None:
            return text
        try:
            secrets = secret_values(store.get_integration(integration_id))
        except Exception:  # no key to decrypt, or the integration is gone: mask nothing we cannot know
            return text
        return scrub(text, secrets) if secrets else text

    # --- operator actions ------------------------------------------------------------------
    def unfinished_runs(self, store: Store, integration_id: int) -> list[int]:
        with store.engine.connect() as conn:
            return list(
                conn.execute(
                    select(m.sync_runs.c.id)
                    .where(m.sync_runs.c.integration_id == integration_id)
                    .where(m.sync_runs.c.status.in_(("processing", "partial", "failed")))
                    .where(m.sync_runs.c.enumerated_at.is_not(None))
                    .order_by(m.sync_runs.c.id)
                ).scalars()
            )
