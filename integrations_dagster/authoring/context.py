"""Binds the HTTP layer to the state store: a shared rate budget, the request log, the listener context.

``DbRateBudget`` is the provider's ``RateLimit`` (or the integration's override) kept in the
database, so every process and run that uses one integration draws from one budget. The window is
exact: one row per granted request, and a request is granted only while fewer than ``limit`` were
granted in the last ``period_seconds``. The check-and-grant runs in one transaction that locks the
integration's budget row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``).

``DbRequestRecorder`` stores every attempt (already redacted by the client) against the
integration and the sync run, and keeps the run's request count.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from integrations_dagster.authoring.integration import Integration
from integrations_dagster.authoring.rate_limit import RateLimit
from integrations_dagster.engine.background import BackgroundWriter
from integrations_dagster.http import ApiClient, RequestLogEntry
from integrations_dagster.http.retry_after import parse_retry_after
from integrations_dagster.http.token_auth import StoredTokenAuth
from integrations_dagster.security.redaction import secret_values
from integrations_dagster.store import Store, request_log, utcnow
from integrations_dagster.store import rate_budgets as budget_sql


class DbRateBudget:
    """A rate budget shared through the state store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        integration_id: int,
        rate_limit: RateLimit,
        *,
        clock: Callable[[], float] = time.time,
        low_water: int | None = None,
        lease: int | None = None,
        prune_every: int = 50,
    ) -> None:
        self.store = store
        self.integration_id = integration_id
        self.rate_limit = rate_limit
        self.clock = clock
        # Server headers are persisted only when the quota runs low: writing on every response
        # would double the database work per request for no change in behaviour.
        self.low_water = low_water if low_water is not None else max(5, rate_limit.limit // 20)
        # Large budgets grant a few requests per transaction (a lease) to save database round trips.
        # Leased grants are counted at lease time and expire unused after ``lease_ttl``, so the
        # window can only be under-used, never exceeded; small budgets lease one at a time. A 2% lease
        # (GitHub's 5,000 an hour: 100) is one transaction per 100 requests on the page-fetching thread,
        # which is a big sync's critical path (docs/BENCHMARKS.md, 100,000 issues).
        self.lease = lease if lease is not None else max(1, min(100, rate_limit.limit // 50))
        # A grant is counted when it is granted; the request reaches the server a little later (and a
        # leased grant up to ``lease_ttl`` later). Counting the window ``margin`` longer than the
        # period absorbs that skew, so the server never sees more than ``limit`` in any period; it
        # costs about 1% of the budget.
        self.margin = min(60.0, max(0.05, rate_limit.period_seconds * 0.01))
        self.lease_ttl = min(5.0, self.margin / 2)
        self._leased: list[float] = []
        self._grants = 0
        self.prune_every = prune_every  # grants older than one period are deleted every N transactions
        self._lock = threading.Lock()  # one client may send from a prefetch thread and its caller

    def acquire(self) -> float:
        with self._lock:
            return self._acquire()

    def observe(self, headers: httpx.Headers | Mapping[str, str]) -> None:
        with self._lock:
            self._observe(headers)

    def _acquire(self) -> float:
        limit, period = self.rate_limit.limit, self.rate_limit.period_seconds
        if self._leased:
            fresh = self.clock() - self.lease_ttl
            self._leased = [t for t in self._leased if t >= fresh]
            if self._leased:
                self._leased.pop()
                return 0.0
        iid = self.integration_id
        with self.store.begin() as conn:
            row = budget_sql.lock_budget(self.store, conn, iid, limit=limit, period_seconds=period, now=self.clock())
            now = self.clock()  # read after the row lock: a waiter must not judge with a stale clock
            if row.blocked_until is not None and row.blocked_until > now:
                return row.blocked_until - now
            remaining = row.server_remaining
            server_live = remaining is not None and (row.server_reset is None or row.server_reset > now)
            if server_live and remaining is not None and remaining <= 0:
                return (row.server_reset - now) if row.server_reset else period
            if self._grants and self._grants % self.prune_every == 0:
                budget_sql.prune_grants(conn, iid, until=now - period - self.margin)
            window = period + self.margin
            in_window = budget_sql.grants_after(conn, iid, now - window)
            if in_window >= limit:
                oldest = budget_sql.grant_time(conn, iid, now - window, in_window - limit)
                return max(oldest + window - now, 0.001)
            n = max(1, min(self.lease, limit - in_window))
            if server_live and remaining is not None:
                n = max(1, min(n, remaining))
            budget_sql.add_grants(conn, iid, at=now, n=n, spend_server=server_live)
            self._grants += 1
            self._leased = [now] * (n - 1)
            return 0.0

    def _observe(self, headers: httpx.Headers | Mapping[str, str]) -> None:
        h = httpx.Headers(headers)
        now = self.clock()
        blocked_until: float | None = None
        set_server = False
        remaining: int | None = None
        reset: float | None = None
        retry_after = h.get("Retry-After")
        if retry_after is not None:
            blocked_until = now + parse_retry_after(retry_after, default=1.0, minimum=0.0, maximum=3600.0)
        remaining_raw = h.get("X-RateLimit-Remaining")
        if remaining_raw is not None:
            try:
                remaining = int(float(remaining_raw))
            except ValueError:
                remaining = None
            try:
                reset = float(h.get("X-RateLimit-Reset", ""))
            except ValueError:
                reset = None
            if remaining is not None and remaining <= self.low_water:
                set_server = True
                if remaining <= 0 and reset is not None and reset > now:
                    blocked_until = reset
        if blocked_until is None and not set_server:
            return
        self._leased = []  # the server knows better: no more requests on old leases
        limit, period = self.rate_limit.limit, self.rate_limit.period_seconds
        with self.store.begin() as conn:
            row = budget_sql.lock_budget(self.store, conn, self.integration_id, limit=limit, period_seconds=period,
                                         now=now)
            if blocked_until is not None and row.blocked_until and row.blocked_until > blocked_until:
                blocked_until = row.blocked_until  # tighten, never loosen
            budget_sql.change_budget(conn, self.integration_id, budget_sql.BudgetChange(
                blocked_until=blocked_until, server_remaining=remaining if set_server else None,
                server_reset=reset if set_server else None, set_server=set_server,
            ))


class DbRequestRecorder:
    """Writes request-log rows in small batches and keeps the sync run's request count.

    On PostgreSQL a full batch is written on a thread of its own (``BackgroundWriter``): the thread
    that fetches pages (a sync's critical path at 1,000 pages) does not wait for a transaction every
    ``batch`` requests. A failed or auth-failed request is written at once, after what is queued;
    ``flush`` (the client's close) waits for everything. A write that fails is logged and dropped:
    a broken log sink must not fail the sync."""

    def __init__(self, store: Store, integration_id: int, sync_run_id: int | None, *, batch: int = 20) -> None:
        self.store = store
        self.integration_id = integration_id
        self.sync_run_id = sync_run_id
        self.batch = batch
        self._rows: list[request_log.LoggedRequest] = []
        self.recorded = 0
        self._lock = threading.RLock()  # a prefetch thread and its caller may both record
        self._writer: BackgroundWriter | None = None

    def record(self, entry: RequestLogEntry) -> None:
        with self._lock:
            self._record(entry)

    def _record(self, entry: RequestLogEntry) -> None:
        self._rows.append(request_log.LoggedRequest(
            integration_id=self.integration_id, sync_run_id=self.sync_run_id, method=entry.method, url=entry.url,
            status_code=entry.status_code, duration_ms=entry.duration_ms, bytes=entry.bytes,
            attempt=entry.attempt, error=entry.error, auth_failure=entry.auth_failure, created_at=utcnow(),
        ))
        if entry.auth_failure or entry.error:
            self.flush()
        elif len(self._rows) >= self.batch:
            if self.store.is_sqlite:  # one writer at a time there: nothing to overlap
                self._flush()
                return
            rows, self._rows = self._rows, []
            if self._writer is None:
                self._writer = BackgroundWriter("request-log", depth=8)
            self._writer.submit(self._write_logged, rows)

    def flush(self) -> None:
        """Write every recorded row now (what is queued first) and wait until it is stored."""
        with self._lock:
            if self._writer is not None:
                self._writer.drain()
            self._flush()

    def close(self) -> None:
        """``flush``, then end the background thread."""
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.stop()
                self._writer = None

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self._write(rows)

    def _write(self, rows: list[request_log.LoggedRequest]) -> None:
        with self.store.begin() as conn:
            request_log.write_requests(conn, rows, sync_run_id=self.sync_run_id)
        self.recorded += len(rows)

    def _write_logged(self, rows: list[request_log.LoggedRequest]) -> None:
        try:
            self._write(rows)
        except Exception as exc:  # on the writer's thread: logged, never the sync's failure
            logging.getLogger("integrations_dagster").warning(
                "request log: %d rows of integration %s not written: %s", len(rows), self.integration_id, exc)


class _ClosingClient(ApiClient):
    """An ApiClient that flushes its request log when closed."""

    recorder_ref: DbRequestRecorder | None = None

    def close(self) -> None:
        try:
            if self.recorder_ref is not None:
                self.recorder_ref.close()
        finally:
            super().close()


def build_client(
    store: Store,
    provider: Any,
    integration: Integration,
    sync_run_id: int | None,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **client_kwargs: Any,
) -> ApiClient:
    base_url = integration.metadata.get("base_url") or getattr(provider, "base_url", None)
    if not base_url:
        raise RuntimeError(
            f"{integration}: no base URL (set Provider.base_url or metadata['base_url']) for session.http"
        )
    limit = RateLimit.from_json(integration.rate_limit) or getattr(provider, "default_rate_limit", None)
    recorder = DbRequestRecorder(store, integration.id, sync_run_id)
    auth = provider.http_auth(integration)
    if isinstance(auth, StoredTokenAuth) and auth.store is None:
        auth.bind(store, integration.id)  # refreshes are shared by every run through the store
    client = _ClosingClient(
        base_url=str(base_url),
        auth=auth,
        headers=dict(getattr(provider, "http_headers", None) or {}),
        transport=transport,
        recorder=recorder,
        budget=DbRateBudget(store, integration.id, limit) if limit else None,
        secrets=secret_values(integration),
        sleep=sleep,
        **client_kwargs,
    )
    client.recorder_ref = recorder
    if isinstance(auth, StoredTokenAuth):
        auth.on_token = client._note_auth_value  # a refreshed token is scrubbed like the first one
    return client


def http_factory_for(
    engine: Any, store: Store, provider: Any, integration: Integration, run_id: int | None, *, for_items: bool = False
) -> Any:
    """A factory called the first time a provider (or a listener) touches its HTTP client.

    Enumeration waits for a spent budget (bounded by ``budget_wait_max``). Item work
    (``for_items=True``) waits at most ``inline_wait_max`` and otherwise raises ``BudgetExhausted``,
    a ``RateLimited``: the engine defers the item without counting a try and the step is not blocked.
    """
    if not (integration.metadata.get("base_url") or getattr(provider, "base_url", None)):
        return None
    kwargs: dict[str, Any] = {}
    if for_items:
        kwargs["budget_wait_max"] = float(engine.settings.inline_wait_max)
    kwargs.update(getattr(engine, "http_options", None) or {})
    return lambda _session=None: build_client(store, provider, integration, run_id, **kwargs)


# --- the listener context ------------------------------------------------------------------
@dataclass
class SyncContext:
    """What a listener (or a provider's ``push``) can reach while the engine runs it: the
    integration, the run, the API."""

    integration: Integration
    sync_run_id: int
    store: Store | None = None
    _factory: Callable[[], ApiClient] | None = None
    _http: ApiClient | None = field(default=None, repr=False)
    #: False when the client is borrowed (the run's ``session.http`` during a push): not closed here.
    _owns_http: bool = field(default=True, repr=False)

    @property
    def http(self) -> ApiClient:
        if self._http is None:
            if self._factory is None:
                raise RuntimeError(f"{self.integration} has no HTTP client (no base URL)")
            self._http = self._factory()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            if self._owns_http:
                self._http.close()
            self._http = None


_current: contextvars.ContextVar[SyncContext | None] = contextvars.ContextVar("integrations_sync", default=None)


def current_sync() -> SyncContext:
    """The sync a listener, or a provider's ``push``, is running in (raises outside the engine)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_sync() is only available inside a listener or a provider's push run by the "
                           "sync engine")
    return ctx


@contextmanager
def sync_context(ctx: SyncContext) -> Iterator[SyncContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
        ctx.close()
