"""``ApiClient``: one ``httpx.Client`` per integration, with retries, budgets and redaction.

Retry implementation: a plain bounded ``for`` loop with an injectable ``sleep``, not
``stamina``. The wait depends on *what* failed (``Retry-After``/``X-RateLimit-Reset`` for rate
limits, jittered exponential backoff for 5xx and transport errors), every attempt must be
recorded with its own status and timing, the shared ``RateBudget`` must be consulted before
each attempt, and long rate-limit waits must turn into a ``RateLimitedError`` so the engine can
defer the item instead of blocking a run. stamina computes its own waits and its test switch is
process-global; bending it to all of that costs more code than the loop, which tests can drive
with a recording ``sleep`` and no real waiting.

Rules, in order, for each attempt (at most ``max_attempts``):

* ``budget.acquire()`` until it returns 0; waits are slept, but if they would add up to more
  than ``budget_wait_max`` -> ``BudgetExhausted`` (nothing was sent).
* ``httpx.TransportError`` (connect/read errors, timeouts) and 5xx -> backoff and retry.
* 429, or 403 with ``Retry-After`` / ``X-RateLimit-Remaining: 0`` / "secondary rate limit" in
  the body -> wait per ``Retry-After`` / reset headers (clamped to
  ``[retry_after_min, retry_after_max]``) and retry; if that wait exceeds
  ``rate_limit_wait_max`` or attempts run out -> ``RateLimitedError(retry_after)``.
* 401 and other 403 -> ``AuthenticationError`` at once; other 4xx -> ``ApiError`` at once.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx
import pydantic
import pydantic_core

from integrations_dagster.http.errors import (
    ApiError,
    AuthenticationError,
    BudgetExhausted,
    PaginationError,
    PayloadValidationError,
    RateLimitedError,
)
from integrations_dagster.http.paginators import Paginator, get_path
from integrations_dagster.http.retry_after import backoff_delay, parse_retry_after, reset_delay
from integrations_dagster.security.redact import redact_text, redact_url, sensitive_query_values

log = logging.getLogger(__name__)

M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_ITEM_KEYS = ("items", "data", "results", "records", "snapshots", "values")


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One HTTP attempt, safe to store: ``url`` and ``error`` are already redacted."""

    method: str
    url: str
    status_code: int | None
    duration_ms: float
    bytes: int
    attempt: int
    error: str | None
    auth_failure: bool


@runtime_checkable
class RequestRecorder(Protocol):
    """Receives every attempt (success or failure); the lead's store writes them to the DB."""

    def record(self, entry: RequestLogEntry) -> None: ...


@runtime_checkable
class RateBudget(Protocol):
    """A request budget shared by everything that talks to one integration's API."""

    def acquire(self) -> float:
        """Take one request slot: 0 means go now, > 0 is seconds to wait before asking again."""
        ...

    def observe(self, headers: httpx.Headers) -> None:
        """Let the server's rate-limit headers tighten the budget (never loosen it)."""
        ...


class InMemoryRateBudget:
    """Sliding-window budget: never more than ``limit`` acquisitions in any ``per_seconds``.

    ``observe`` honours ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` and ``Retry-After``: when
    the server says the quota is spent, ``acquire`` waits until the server's reset even if the
    local window has room. Thread-safe. ``clock`` is monotonic time, ``wall_clock`` epoch time
    (the reset header is in epoch seconds); both injectable for tests.
    """

    def __init__(
        self,
        limit: int,
        per_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or per_seconds <= 0:
            raise ValueError("limit must be >= 1 and per_seconds > 0")
        self.limit = limit
        self.per_seconds = per_seconds
        self._clock = clock
        self._wall = wall_clock
        self._stamps: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._server_remaining: int | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = self._clock()
            if now < self._blocked_until:
                return self._blocked_until - now
            while self._stamps and self._stamps[0] <= now - self.per_seconds:
                self._stamps.popleft()
            if len(self._stamps) >= self.limit:
                return max(self._stamps[0] + self.per_seconds - now, 1e-3)
            if self._server_remaining is not None:
                if self._server_remaining <= 0:
                    # Told "0 left" without a usable reset: be conservative for one window.
                    self._blocked_until = now + self.per_seconds
                    self._server_remaining = None
                    return self.per_seconds
                self._server_remaining -= 1
            self._stamps.append(now)
            return 0.0

    def observe(self, headers: httpx.Headers | Mapping[str, str]) -> None:
        h = httpx.Headers(headers)
        with self._lock:
            now = self._clock()
            retry_after = h.get("Retry-After")
            if retry_after is not None:
                wait = parse_retry_after(retry_after, default=1.0, minimum=0.0, maximum=3600.0)
                self._blocked_until = max(self._blocked_until, now + wait)
            remaining = h.get("X-RateLimit-Remaining")
            if remaining is None:
                return
            try:
                left = int(float(remaining))
            except ValueError:
                return
            if left <= 0:
                delay = reset_delay(h, self._wall())
                if delay is not None:
                    self._blocked_until = max(self._blocked_until, now + delay)
                    self._server_remaining = None
                    return
            if self._server_remaining is None or left < self._server_remaining:
                self._server_remaining = left


@functools.lru_cache(maxsize=256)
def _list_adapter(model: type[pydantic.BaseModel]) -> pydantic.TypeAdapter[list[Any]]:
    # ``list[model]`` of a model known only at run time: no static type can name it.
    return pydantic.TypeAdapter(list[model])  # type: ignore[valid-type]


def _first_error(exc: pydantic.ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_input=False, include_url=False)
    if not errors:
        return "<root>", str(exc)
    err = errors[0]
    loc = ".".join(str(part) for part in err.get("loc", ())) or "<root>"
    more = f" (+{len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return loc, f"{err.get('msg', 'invalid')}{more}"


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The TLS context every ``ApiClient`` verifies servers with unless given its own: httpx's default
    (certifi's CA bundle; ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), built once per process.

    Building it loads the whole CA bundle: 20-40 ms of CPU, which ``httpx.Client()`` pays for every
    client it makes. A sync makes a client for its enumeration and one for its listeners, so a fleet
    of small syncs paid it twice per sync (measured: docs/BENCHMARKS.md, Fleet). An ``SSLContext`` is
    safe to share between clients and threads.
    """
    return httpx.create_ssl_context()


class ApiClient:
    """An ``httpx.Client`` bound to one integration, safe to log and kind to rate limits.

    Use as a context manager or call ``close()``. See the module docstring for retry rules.
    """

    def __init__(
        self,
        *,
        base_url: str = "",
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_default: float = 60.0,
        retry_after_min: float = 1.0,
        retry_after_max: float = 900.0,
        rate_limit_wait_max: float = 120.0,
        budget_wait_max: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] | None = random.random,
        recorder: RequestRecorder | None = None,
        budget: RateBudget | None = None,
        secrets: Iterable[str] = (),
        follow_redirects: bool = True,
        prefetch_pages: int = 8,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_default = retry_after_default
        self.retry_after_min = retry_after_min
        self.retry_after_max = retry_after_max
        self.rate_limit_wait_max = rate_limit_wait_max
        self.budget_wait_max = budget_wait_max
        self.recorder = recorder
        self.budget = budget
        #: Pages fetched ahead of the consumer by a worker thread in ``paginate``/``iter_items``
        #: (0 = fetch each page only when the previous one has been consumed).
        self.prefetch_pages = prefetch_pages
        self._sleep = sleep
        self._jitter = jitter
        self._secrets: set[str] = {s for s in secrets if s}
        for name, value in (headers or {}).items():
            if name.lower() in {"authorization", "proxy-authorization", "x-api-key"}:
                self._note_auth_value(value)
        self._http = httpx.Client(
            base_url=base_url,
            auth=auth,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=follow_redirects,
            # Certificates are always verified; the context is built once per process, not per client.
            verify=verify if verify is not None else shared_tls_context(),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def secrets(self) -> frozenset[str]:
        """Every value scrubbed from messages: configured secrets plus auth values seen."""
        return frozenset(self._secrets)

    # -- scrubbing ---------------------------------------------------------------------------

    def _note_auth_value(self, value: str | None) -> None:
        if not value:
            return
        self._secrets.add(value)
        scheme, _sep, credential = value.partition(" ")
        if credential and scheme.lower() in {"bearer", "token", "basic", "apikey", "api-key"}:
            self._secrets.add(credential.strip())

    def _note_request(self, request: httpx.Request | None) -> None:
        if request is None:
            return
        for name in ("authorization", "proxy-authorization", "x-api-key"):
            self._note_auth_value(request.headers.get(name))
        self._secrets.update(sensitive_query_values(str(request.url)))

    def scrub(self, text: str) -> str:
        """Mask every known secret in ``text`` (also redacts credential query params)."""
        return redact_text(text, tuple(self._secrets))  # a snapshot: a prefetch thread may add to it

    def _endpoint(self, request: httpx.Request) -> str:
        return self.scrub(redact_url(str(request.url)))

    # -- core request loop -------------------------------------------------------------------

    def _record(
        self,
        request: httpx.Request,
        *,
        status: int | None,
        started: float,
        size: int,
        attempt: int,
        error: str | None,
        auth_failure: bool = False,
    ) -> None:
        if self.recorder is None:
            return
        entry = RequestLogEntry(
            method=request.method,
            url=self._endpoint(request),
            status_code=status,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            bytes=size,
            attempt=attempt,
            error=None if error is None else self.scrub(error),
            auth_failure=auth_failure,
        )
        try:
            self.recorder.record(entry)
        except Exception:  # a broken log sink must not fail the sync
            log.exception("request recorder failed")

    def _wait_for_budget(self, endpoint: str) -> None:
        if self.budget is None:
            return
        waited = 0.0
        while True:
            wait = float(self.budget.acquire())
            if wait <= 0:
                return
            wait = max(wait, 1e-3)
            if waited + wait > self.budget_wait_max:
                raise BudgetExhausted(wait, endpoint)
            log.debug("budget: waiting %.3f s before %s", wait, endpoint)
            self._sleep(wait)
            waited += wait

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Seconds to wait if ``response`` is a rate limit, else ``None``."""
        status = response.status_code
        headers = response.headers
        retry_after = headers.get("Retry-After")
        if status == 403:
            remaining = (headers.get("X-RateLimit-Remaining") or "").strip()
            body = response.text[:4000].lower() if response.content else ""
            if not (
                retry_after is not None
                or remaining == "0"
                or "secondary rate limit" in body
            ):
                return None
        elif status != 429:
            return None
        if retry_after is not None:
            return parse_retry_after(retry_after, default=self.retry_after_default,
                                     minimum=self.retry_after_min, maximum=self.retry_after_max)
        delay = reset_delay(headers)
        if delay is not None:
            # +1 s: the reset header has 1 s resolution and clocks drift.
            return max(self.retry_after_min, min(delay + 1.0, self.retry_after_max))
        return parse_retry_after(None, default=self.retry_after_default,
                                 minimum=self.retry_after_min, maximum=self.retry_after_max)

    def _error_message(self, response: httpx.Response) -> str:
        text = ""
        try:
            body = response.json()
            if isinstance(body, Mapping) and isinstance(body.get("message"), str):
                text = body["message"]
            else:
                text = response.text
        except ValueError:
            text = response.text
        text = " ".join(text.split())
        if len(text) > 300:
            text = text[:300] + "..."
        return self.scrub(text or response.reason_phrase)

    def send(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send with retries and return the successful (< 400) response, or raise ``ApiError``."""
        request = self._http.build_request(method, path_or_url, params=params or None, json=json, **kw)
        self._note_request(request)
        endpoint = self._endpoint(request)
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            self._wait_for_budget(endpoint)
            started = time.perf_counter()
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                try:
                    self._note_request(exc.request)
                except RuntimeError:  # no request attached
                    pass
                error = self.scrub(f"{type(exc).__name__}: {exc}")
                self._record(request, status=None, started=started, size=0, attempt=attempt, error=error)
                if last:
                    raise ApiError(
                        None, endpoint, f"{error} (gave up after {attempt} attempts)"
                    ) from None
                delay = backoff_delay(
                    attempt, base=self.backoff_base, cap=self.backoff_cap, jitter=self._jitter
                )
                log.warning("%s %s failed (%s); retry %d in %.2f s", method, endpoint, error, attempt, delay)
                self._sleep(delay)
                continue
            self._note_request(response.request)
            if self.budget is not None:
                self.budget.observe(response.headers)
            status = response.status_code
            size = len(response.content)
            if status < 400:
                self._record(request, status=status, started=started, size=size, attempt=attempt, error=None)
                return response
            message = self._error_message(response)
            wait = self._rate_limit_wait(response)
            if wait is not None:
                self._record(
                    request, status=status, started=started, size=size, attempt=attempt,
                    error=f"rate limited: {message}; retry after {wait:g} s",
                )
                if last or wait > self.rate_limit_wait_max:
                    raise RateLimitedError(wait, endpoint, f"rate limited: {message}", status_code=status)
                log.warning("%s %s rate limited (%d); waiting %.1f s", method, endpoint, status, wait)
                self._sleep(wait)
                continue
            if status >= 500:
                self._record(request, status=status, started=started, size=size, attempt=attempt, error=message)
                if last:
                    raise ApiError(status, endpoint, f"{message} (gave up after {attempt} attempts)")
                delay = backoff_delay(
                    attempt, base=self.backoff_base, cap=self.backoff_cap, jitter=self._jitter
                )
                if response.headers.get("Retry-After") is not None:  # e.g. 503 + Retry-After
                    delay = parse_retry_after(
                        response.headers["Retry-After"], default=delay,
                        minimum=self.retry_after_min, maximum=self.backoff_cap,
                    )
                log.warning("%s %s -> %d; retry %d in %.2f s", method, endpoint, status, attempt, delay)
                self._sleep(delay)
                continue
            auth = status in (401, 403)
            self._record(
                request, status=status, started=started, size=size, attempt=attempt,
                error=message, auth_failure=auth,
            )
            if auth:
                raise AuthenticationError(status, endpoint, message)
            raise ApiError(status, endpoint, message)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- convenience -------------------------------------------------------------------------

    def _parse_body(self, response: httpx.Response) -> Any:
        try:
            # pydantic-core's parser: the same result as json.loads at about half the cost, which
            # matters on the fetch thread of a big sync.
            return pydantic_core.from_json(response.content)
        except ValueError as exc:
            try:
                # pydantic-core refuses a lone surrogate escape ("\ud800", e.g. an emoji cut in half
                # upstream); the standard parser keeps it, so the one bad item is recorded invalid at
                # dispatch instead of the whole page failing every run.
                return json.loads(response.text)
            except ValueError:
                pass
            raise PayloadValidationError(
                endpoint=self._endpoint(response.request),
                field="<body>",
                message=f"response is not JSON: {exc}",
                raw=response.text,
                secrets=tuple(self._secrets),
            ) from None

    def _validate(self, model: type[M], raw: Any, endpoint: str, prefix: str = "") -> M:
        try:
            return model.model_validate(raw)
        except pydantic.ValidationError as exc:
            field, message = _first_error(exc)
            raise PayloadValidationError(
                endpoint=endpoint,
                field=f"{prefix}{field}" if prefix else field,
                message=message,
                raw=raw,
                secrets=tuple(self._secrets),
            ) from None

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        model: type[pydantic.BaseModel] | None = None,
        item_model: type[pydantic.BaseModel] | None = None,
        **kw: Any,
    ) -> Any:
        """Send with retries. Returns the ``httpx.Response``, or, with ``model``, the validated
        model of the JSON body, or, with ``item_model``, a list of validated items (the body
        must be a list). Validation failures raise ``PayloadValidationError`` naming the
        endpoint and the field (``"3.title"`` = item 3's title)."""
        response = self.send(method, path_or_url, params=params, json=json, **kw)
        if model is None and item_model is None:
            return response
        body = self._parse_body(response)
        endpoint = self._endpoint(response.request)
        if model is not None:
            return self._validate(model, body, endpoint)
        assert item_model is not None
        if not isinstance(body, list):
            raise PayloadValidationError(
                endpoint=endpoint, field="<root>", message="expected a JSON list",
                raw=body, secrets=tuple(self._secrets),
            )
        return [self._validate(item_model, raw, endpoint, f"{i}.") for i, raw in enumerate(body)]

    def get(self, path_or_url: str, *, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """``request("GET", ...)``."""
        return self.request("GET", path_or_url, params=params, **kw)

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        model: type[pydantic.BaseModel] | None = None,
    ) -> Any:
        """GET and return the JSON body, validated against ``model`` when given."""
        response = self.send("GET", path, params=params)
        body = self._parse_body(response)
        if model is None:
            return body
        return self._validate(model, body, self._endpoint(response.request))

    def _extract_items(self, body: Any, items_path: str | None, endpoint: str) -> list[Any]:
        if items_path is not None:
            items = get_path(body, items_path)
        elif isinstance(body, list):
            items = body
        else:
            items = None
            if isinstance(body, Mapping):
                for key in _ITEM_KEYS:
                    if isinstance(body.get(key), list):
                        items = body[key]
                        break
        if items is None and items_path is not None and isinstance(body, Mapping):
            items = []  # an explicit path that is absent (e.g. last page omits it): no items
        if not isinstance(items, list):
            raise PayloadValidationError(
                endpoint=endpoint, field=items_path or "<root>",
                message="expected a list of items", raw=body, secrets=tuple(self._secrets),
            )
        return items

    def _pages(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        paginator: Paginator,
        items_path: str | None,
    ) -> Iterator[tuple[str, list[Any]]]:
        url = path
        current = paginator.first_request(dict(params or {}))
        seen: set[str] = set()
        skip: frozenset[Any] = frozenset()
        identity = getattr(paginator, "identity", None)
        while True:
            # httpx replaces a URL's query string when given params, even empty ones, so a
            # next-URL that carries its own query is merged explicitly, never overwritten.
            target = httpx.URL(url)
            if current:
                target = target.copy_merge_params(current)
            # A page asked for twice means the API's next links (or cursors) go round in a circle:
            # following them would dispatch the same items until the job times out.
            absolute = str(self._http.build_request("GET", str(target)).url)  # a next link is absolute
            if absolute in seen:
                raise PaginationError(
                    f"pagination cycle: page {len(seen) + 1} points back to {redact_url(absolute)}, "
                    f"already fetched; stopping instead of fetching the same pages forever"
                )
            seen.add(absolute)
            response = self.send("GET", str(target), params=None)
            endpoint = self._endpoint(response.request)
            items = self._extract_items(self._parse_body(response), items_path, endpoint)
            nxt = paginator.next_request(response, items, current)
            del response
            if skip and identity is not None:  # the overlap with the page before (already yielded)
                items = [i for i in items if identity(i) not in skip]
            yield endpoint, items
            if nxt is None:
                return
            if nxt.url is not None:
                url = nxt.url
            current = dict(nxt.params)
            skip = nxt.skip

    def _prefetched(self, pages: Iterator[Any], depth: int) -> Iterator[Any]:
        """Yield from ``pages`` while a worker thread fetches up to ``depth`` pages ahead.

        Why: a sync alternates between waiting for the API and handling a page (validating,
        dispatching, writing); fetching the next page meanwhile hides the API's latency behind
        that work, which is most of what a framework adds to a hand-written loop. Order, retries,
        the rate budget and the request log are unchanged (the worker runs the same ``send``, in
        the caller's context); an error in the worker is raised to the consumer at the page where
        it happened, after the pages before it. Closing the iterator early stops the worker after
        at most the request it has in flight.
        """
        if depth <= 0:
            yield from pages
            return
        import contextvars
        import queue

        q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def put(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for page in pages:
                    if not put(("page", page)):
                        return
                put(("end", None))
            except BaseException as exc:  # handed to the consumer, raised there
                put(("error", exc))
            finally:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()

        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(work,), name="integrations-prefetch", daemon=True
        )
        worker.start()
        try:
            while True:
                kind, value = q.get()
                if kind == "page":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            stop.set()
            worker.join()

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        paginator: Paginator,
        items_path: str | None = None,
        prefetch: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of raw items, at most ``1 + prefetch`` pages in memory at a time.

        ``items_path`` is the dotted path of the item list in the body; ``None`` means the
        body is the list (or a dict with an ``items``/``data``/``results``/... list).
        ``prefetch`` pages are fetched ahead in a worker thread (default ``prefetch_pages``).
        """
        pages = self._pages(path, params=params, paginator=paginator, items_path=items_path)
        depth = self.prefetch_pages if prefetch is None else prefetch
        for _endpoint, items in self._prefetched(pages, depth):
            yield items

    def pull_pages(
        self, path: str, *, paginator: Any, params: Mapping[str, Any] | None = None
    ) -> Iterator[Any]:
        """Yield the ``PullPage``s of a pull protocol (``SyncCursorPaginator``): POST the cursor as
        JSON (or GET it as a query param when ``paginator.method`` is ``"GET"``), one page at a time."""
        method = getattr(paginator, "method", "GET").upper()
        current = paginator.first_request(dict(params or {}))
        while True:
            if method == "GET":
                response = self.send("GET", path, params=current)
            else:
                response = self.send(method, path, json=current)
            page = paginator.page(self._parse_body(response))
            del response
            nxt = paginator.next_after(page, current)
            yield page
            if nxt is None:
                return
            current = dict(nxt.params)

    def iter_items(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        paginator: Paginator,
        item_model: type[M] | None = None,
        items_path: str | None = None,
        prefetch: int | None = None,
    ) -> Iterator[tuple[dict[str, Any], M | None, PayloadValidationError | None]]:
        """Yield ``(raw, parsed, error)`` per item across all pages.

        A malformed item is yielded with ``parsed=None`` and a ``PayloadValidationError``
        (naming endpoint and field) instead of being dropped or aborting the sync, so the
        caller can record it as a failed item and keep going. ``prefetch`` as in ``paginate``.
        """
        pages = self._pages(path, params=params, paginator=paginator, items_path=items_path)
        depth = self.prefetch_pages if prefetch is None else prefetch
        for endpoint, items in self._prefetched(pages, depth):
            if item_model is None:
                for raw in items:
                    yield raw, None, None
                continue
            try:  # the whole page in one call; only a page with a bad item is validated item by item
                parsed_page: list[Any] = _list_adapter(item_model).validate_python(items)
            except pydantic.ValidationError:
                parsed_page = []
                for raw in items:
                    try:
                        parsed_page.append(self._validate(item_model, raw, endpoint))
                    except PayloadValidationError as exc:
                        parsed_page.append(exc)
            for raw, parsed in zip(items, parsed_page, strict=False):
                if isinstance(parsed, PayloadValidationError):
                    yield raw, None, parsed
                else:
                    yield raw, parsed, None

