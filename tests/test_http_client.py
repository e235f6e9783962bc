"""``ApiClient`` retry, budget, recording and redaction rules over ``httpx.MockTransport``.

``sleep`` is injected, so every wait is asserted on instead of waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pydantic
import pytest

from integrations_dagster.errors import RateLimited
from integrations_dagster.http import (
    ApiClient,
    ApiError,
    AuthenticationError,
    BudgetExhausted,
    InMemoryRateBudget,
    PageNumberPaginator,
    PayloadValidationError,
    RateBudget,
    RateLimitedError,
    RequestLogEntry,
    RequestRecorder,
)

BASE = "https://api.test"
TOKEN = "ghp_SuperSecretToken123"
QUERY_TOKEN = "qtok-98765"
EXTRA_SECRET = "client-secret-value-42"


class Recorder:
    def __init__(self) -> None:
        self.entries: list[RequestLogEntry] = []

    def record(self, entry: RequestLogEntry) -> None:
        self.entries.append(entry)


Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A transport handler that plays back ``steps`` in order and remembers requests."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step


def make(steps: Iterable[Step], **kw: object) -> tuple[ApiClient, Script, list[float], Recorder]:
    script = Script(steps)
    sleeps: list[float] = []
    recorder = Recorder()
    kw.setdefault("jitter", lambda: 1.0)
    client = ApiClient(
        base_url=BASE,
        headers={"Authorization": f"Bearer {TOKEN}"},
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        recorder=recorder,
        secrets=[EXTRA_SECRET],
        **kw,  # type: ignore[arg-type]
    )
    return client, script, sleeps, recorder


def ok(body: object = None, **kw: object) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"ok": True}, **kw)  # type: ignore[arg-type]


def assert_no_secrets(*texts: object) -> None:
    for text in texts:
        for secret in (TOKEN, QUERY_TOKEN, EXTRA_SECRET):
            assert secret not in str(text), f"secret leaked in {text!r}"


# -- success & defaults ------------------------------------------------------------------------


def test_success_records_one_entry_and_defaults_are_sane() -> None:
    client, script, sleeps, rec = make([ok({"a": 1})])
    assert client.get_json("/x", params={"q": "1"}) == {"a": 1}
    assert sleeps == []
    assert script.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    (entry,) = rec.entries
    assert entry.method == "GET" and entry.status_code == 200 and entry.attempt == 1
    assert entry.url == f"{BASE}/x?q=1" and entry.error is None and not entry.auth_failure
    assert entry.bytes == len(b'{"a":1}') and entry.duration_ms >= 0
    timeout = client._http.timeout
    assert timeout.connect == 5.0 and timeout.read == 30.0
    assert isinstance(rec, RequestRecorder)


def test_request_returns_response_or_models() -> None:
    class Thing(pydantic.BaseModel):
        id: int

    client, *_ = make([ok({"id": 3})])
    assert client.request("GET", "/t", model=Thing) == Thing(id=3)
    client, *_ = make([ok([{"id": 1}, {"id": 2}])])
    assert client.request("GET", "/t", item_model=Thing) == [Thing(id=1), Thing(id=2)]
    client, *_ = make([ok([{"id": 1}])])
    response = client.get("/t")
    assert isinstance(response, httpx.Response) and response.json() == [{"id": 1}]
    client, script, *_ = make([ok()])
    client.request("POST", "/t", json={"x": 1})
    assert script.requests[0].method == "POST" and script.requests[0].content == b'{"x":1}'


# -- rate limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected_wait"),
    [("3", 3.0), ("0", 1.0), ("-5", 1.0), ("garbage", 60.0), (None, 60.0), ("100000", 900.0)],
)
def test_429_waits_per_retry_after_then_succeeds(retry_after: str | None, expected_wait: float) -> None:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    client, script, sleeps, rec = make(
        [httpx.Response(429, headers=headers), ok()], rate_limit_wait_max=10_000
    )
    assert client.get_json("/x") == {"ok": True}
    assert sleeps == [expected_wait]
    assert [e.status_code for e in rec.entries] == [429, 200]
    assert [e.attempt for e in rec.entries] == [1, 2]
    assert "rate limited" in (rec.entries[0].error or "")


def test_429_http_date_retry_after() -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    client, _, sleeps, _ = make([httpx.Response(429, headers={"Retry-After": when}), ok()])
    client.get_json("/x")
    assert len(sleeps) == 1 and 27.0 <= sleeps[0] <= 30.0


def test_retry_after_minimum_is_configurable() -> None:
    client, _, sleeps, _ = make([httpx.Response(429, headers={"Retry-After": "0"}), ok()], retry_after_min=0.25)
    client.get_json("/x")
    assert sleeps == [0.25]


def test_429_without_retry_after_uses_reset_header() -> None:
    reset = int(time.time()) + 20
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    client, _, sleeps, _ = make([httpx.Response(429, headers=headers), ok()])
    client.get_json("/x")
    assert 18.0 <= sleeps[0] <= 22.0


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(403, headers={"Retry-After": "2"}, json={"message": "slow down"}),
        httpx.Response(403, json={"message": "You have exceeded a secondary rate limit. Wait."}, headers={"Retry-After": "2"}),
        httpx.Response(403, json={"message": "You have exceeded a SECONDARY RATE LIMIT."}),
        httpx.Response(
            403,
            json={"message": "API rate limit exceeded"},
            headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 1)},
        ),
    ],
    ids=["retry-after", "secondary+retry-after", "secondary-no-header", "primary-remaining-0"],
)
def test_403_rate_limits_are_retried_not_auth_failures(response: httpx.Response) -> None:
    client, script, sleeps, rec = make([response, ok()], retry_after_default=5.0)
    assert client.get_json("/x") == {"ok": True}
    assert len(script.requests) == 2 and len(sleeps) == 1 and 1.0 <= sleeps[0] <= 5.0
    assert not rec.entries[0].auth_failure


def test_rate_limit_exhausting_attempts_raises_rate_limited_error() -> None:
    client, script, sleeps, rec = make([httpx.Response(429, headers={"Retry-After": "7"})], max_attempts=3)
    with pytest.raises(RateLimitedError) as info:
        client.get_json("/x")
    assert info.value.retry_after == 7.0 and info.value.status_code == 429
    assert isinstance(info.value, RateLimited)  # the engine defers instead of failing
    assert isinstance(info.value, ApiError)
    assert len(script.requests) == 3 and sleeps == [7.0, 7.0]
    assert [e.attempt for e in rec.entries] == [1, 2, 3]


def test_long_rate_limit_wait_defers_immediately() -> None:
    client, script, sleeps, _ = make([httpx.Response(429, headers={"Retry-After": "600"})], rate_limit_wait_max=60)
    with pytest.raises(RateLimitedError) as info:
        client.get_json("/x")
    assert info.value.retry_after == 600.0
    assert sleeps == [] and len(script.requests) == 1


# -- 5xx & transport errors --------------------------------------------------------------------


def test_5xx_backoff_is_exponential_jittered_and_bounded() -> None:
    client, script, sleeps, rec = make(
        [httpx.Response(502), httpx.Response(503), httpx.Response(500), httpx.Response(504), ok()],
        backoff_base=0.5, backoff_cap=3.0, jitter=lambda: 0.5,
    )
    assert client.get_json("/x") == {"ok": True}
    assert sleeps == [0.25, 0.5, 1.0, 1.5]  # ceilings 0.5,1,2,3(cap) x jitter 0.5
    assert [e.status_code for e in rec.entries] == [502, 503, 500, 504, 200]


def test_5xx_exhausted_raises_api_error_with_status() -> None:
    client, script, sleeps, _ = make([httpx.Response(500, json={"message": "boom"})], max_attempts=4)
    with pytest.raises(ApiError) as info:
        client.get_json("/x")
    assert info.value.status_code == 500 and "boom" in str(info.value) and "4 attempts" in str(info.value)
    assert not isinstance(info.value, RateLimitedError)
    assert len(script.requests) == 4 and len(sleeps) == 3


def test_503_with_retry_after_honours_it_within_backoff_cap() -> None:
    client, _, sleeps, _ = make([httpx.Response(503, headers={"Retry-After": "4"}), ok()], backoff_cap=30.0)
    client.get_json("/x")
    assert sleeps == [4.0]


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ReadError("reset"), httpx.ConnectTimeout("t")],
)
def test_transport_errors_are_retried_and_recorded(exc: Exception) -> None:
    client, script, sleeps, rec = make([exc, ok()])
    assert client.get_json("/x") == {"ok": True}
    assert len(sleeps) == 1
    assert rec.entries[0].status_code is None and type(exc).__name__ in (rec.entries[0].error or "")
    assert rec.entries[1].status_code == 200


def test_transport_errors_exhausted_raise_api_error_without_status() -> None:
    client, script, sleeps, rec = make([httpx.ConnectError(f"refused {TOKEN}")], max_attempts=2)
    with pytest.raises(ApiError) as info:
        client.get_json("/x")
    assert info.value.status_code is None and "ConnectError" in str(info.value)
    assert len(rec.entries) == 2
    assert_no_secrets(info.value, *rec.entries)


# -- immediate failures ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_other_4xx_fail_at_once(status: int) -> None:
    client, script, sleeps, rec = make([httpx.Response(status, json={"message": "no such thing"})])
    with pytest.raises(ApiError) as info:
        client.get_json("/missing")
    assert type(info.value) is ApiError
    assert info.value.status_code == status and "/missing" in str(info.value) and "no such thing" in str(info.value)
    assert len(script.requests) == 1 and sleeps == [] and not rec.entries[0].auth_failure


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, json={"message": "Bad credentials"}),
        httpx.Response(403, json={"message": "Resource not accessible by integration"}, headers={"X-RateLimit-Remaining": "4999"}),
    ],
)
def test_401_and_plain_403_are_authentication_errors(response: httpx.Response) -> None:
    client, script, sleeps, rec = make([response])
    with pytest.raises(AuthenticationError) as info:
        client.get_json("/x")
    assert info.value.auth_failure and info.value.status_code == response.status_code
    assert len(script.requests) == 1 and sleeps == []
    assert rec.entries[0].auth_failure is True


# -- budget ------------------------------------------------------------------------------------


class ScriptedBudget:
    def __init__(self, waits: list[float]) -> None:
        self.waits = waits
        self.observed: list[httpx.Headers] = []

    def acquire(self) -> float:
        return self.waits.pop(0) if self.waits else 0.0

    def observe(self, headers: httpx.Headers) -> None:
        self.observed.append(headers)


def test_budget_waits_are_slept_before_sending_and_headers_observed() -> None:
    budget = ScriptedBudget([2.0, 3.0, 0.0])
    assert isinstance(budget, RateBudget)
    client, script, sleeps, _ = make([ok(headers={"X-RateLimit-Remaining": "9"})], budget=budget)
    client.get_json("/x")
    assert sleeps == [2.0, 3.0]
    assert budget.observed[0]["X-RateLimit-Remaining"] == "9"


def test_budget_consulted_before_every_attempt() -> None:
    calls = []

    class Counting(ScriptedBudget):
        def acquire(self) -> float:
            calls.append(1)
            return 0.0

    budget = Counting([])
    client, script, _, _ = make([httpx.Response(502), httpx.Response(429, headers={"Retry-After": "1"}), ok()], budget=budget)
    client.get_json("/x")
    assert len(calls) == 3 == len(script.requests) == len(budget.observed)


def test_budget_exhausted_when_wait_exceeds_max_and_nothing_sent() -> None:
    budget = ScriptedBudget([30.0, 40.0])
    client, script, sleeps, rec = make([ok()], budget=budget, budget_wait_max=60.0)
    with pytest.raises(BudgetExhausted) as info:
        client.get_json("/x")
    assert info.value.retry_after == 40.0 and isinstance(info.value, RateLimited)
    assert sleeps == [30.0] and script.requests == [] and rec.entries == []


def test_in_memory_budget_never_exceeds_limit_in_any_window() -> None:
    now = [0.0]
    budget = InMemoryRateBudget(3, 10.0, clock=lambda: now[0])
    grants = []
    for _ in range(40):
        wait = budget.acquire()
        if wait == 0:
            grants.append(now[0])
        now[0] += 0.5 if wait == 0 else wait
    assert len(grants) >= 9
    for t in grants:
        assert sum(1 for g in grants if t <= g < t + 10.0) <= 3


def test_in_memory_budget_observe_tightens_to_server_reset() -> None:
    now = [100.0]
    wall = [1_000_000.0]
    budget = InMemoryRateBudget(100, 60.0, clock=lambda: now[0], wall_clock=lambda: wall[0])
    assert budget.acquire() == 0.0
    budget.observe(httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(wall[0]) + 30)}))
    assert budget.acquire() == pytest.approx(30.0)
    now[0] += 30.0
    assert budget.acquire() == 0.0
    # remaining=2 caps the local budget below its own limit
    budget.observe(httpx.Headers({"X-RateLimit-Remaining": "2"}))
    assert budget.acquire() == 0.0 and budget.acquire() == 0.0
    assert budget.acquire() > 0
    # Retry-After blocks too
    budget2 = InMemoryRateBudget(100, 60.0, clock=lambda: now[0])
    budget2.observe({"Retry-After": "12"})
    assert budget2.acquire() == pytest.approx(12.0)


def test_client_with_in_memory_budget_waits_via_injected_sleep() -> None:
    now = [0.0]
    budget = InMemoryRateBudget(2, 10.0, clock=lambda: now[0])
    sleeps: list[float] = []

    def fake_sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    client = ApiClient(base_url=BASE, transport=httpx.MockTransport(lambda r: ok()), budget=budget, sleep=fake_sleep)
    for _ in range(5):
        client.get_json("/x")
    assert sleeps == [10.0, 10.0]


# -- redaction ---------------------------------------------------------------------------------


def test_no_secret_in_records_or_exceptions() -> None:
    leaky = httpx.Response(
        400, json={"message": f"bad token {TOKEN} / {QUERY_TOKEN} / {EXTRA_SECRET}"}
    )
    client, script, sleeps, rec = make(
        [httpx.ConnectError(f"boom {TOKEN}"), httpx.Response(500, text=f"oops {EXTRA_SECRET}"), leaky]
    )
    with pytest.raises(ApiError) as info:
        client.get_json(f"https://user:pw12345@api.test/x?access_token={QUERY_TOKEN}&page=1")
    assert script.requests[0].url.params["access_token"] == QUERY_TOKEN  # really sent
    assert len(rec.entries) == 3
    assert_no_secrets(str(info.value), repr(info.value), info.value.endpoint, *[repr(e) for e in rec.entries])
    assert "pw12345" not in str(info.value)
    assert rec.entries[0].url == "https://api.test/x?access_token=REDACTED&page=1"
    assert "***" in str(info.value)


def test_basic_auth_value_is_scrubbed() -> None:
    script = Script([httpx.Response(404, text="user alice pass s3cretpass!")])
    rec = Recorder()
    client = ApiClient(base_url=BASE, auth=httpx.BasicAuth("alice", "s3cretpass!"),
                       transport=httpx.MockTransport(script), recorder=rec, secrets=["s3cretpass!"])
    with pytest.raises(ApiError) as info:
        client.get_json("/x")
    assert "s3cretpass!" not in str(info.value) and "s3cretpass!" not in repr(rec.entries)
    assert any(s.startswith("Basic ") for s in client.secrets)


def test_broken_recorder_does_not_break_requests() -> None:
    class Broken:
        def record(self, entry: RequestLogEntry) -> None:
            raise RuntimeError("db down")

    client = ApiClient(base_url=BASE, transport=httpx.MockTransport(lambda r: ok()), recorder=Broken())
    assert client.get_json("/x") == {"ok": True}


# -- payload validation --------------------------------------------------------------------------


class User(pydantic.BaseModel):
    login: str


class Issue(pydantic.BaseModel):
    id: int
    title: str
    user: User


def test_get_json_validation_error_names_endpoint_and_field() -> None:
    raw = {"id": 1, "title": "x", "user": {"name": "no login"}, "blob": "z" * 5000, "tok": TOKEN}
    client, *_ = make([ok(raw)])
    with pytest.raises(PayloadValidationError) as info:
        client.get_json("/repos/a/b/issues/1", params={"token": QUERY_TOKEN}, model=Issue)
    err = info.value
    assert err.field == "user.login"
    assert err.endpoint == f"{BASE}/repos/a/b/issues/1?token=REDACTED"
    assert err.raw == raw  # full payload kept
    text = str(err)
    assert "/repos/a/b/issues/1" in text and "user.login" in text
    assert len(text) < 1200 and "5" in text  # raw truncated
    assert_no_secrets(text)


def test_non_json_body_is_a_payload_error() -> None:
    client, *_ = make([httpx.Response(200, text="<html>maintenance</html>")])
    with pytest.raises(PayloadValidationError) as info:
        client.get_json("/x")
    assert info.value.field == "<body>" and info.value.raw == "<html>maintenance</html>"


def test_request_item_model_names_item_index() -> None:
    client, *_ = make([ok([{"id": 1, "title": "a", "user": {"login": "u"}}, {"id": 2, "user": {"login": "u"}}])])
    with pytest.raises(PayloadValidationError) as info:
        client.request("GET", "/issues", item_model=Issue)
    assert info.value.field == "1.title"


def test_iter_items_yields_malformed_items_instead_of_dropping_them() -> None:
    page = [
        {"id": 1, "title": "a", "user": {"login": "u"}},
        {"id": 2, "title": None, "user": {"login": "u"}},
        {"id": 3, "title": "c", "user": {"login": "u"}},
    ]
    client, *_ = make([ok(page)])
    results = list(client.iter_items("/issues", paginator=PageNumberPaginator(per_page=10), item_model=Issue))
    assert [r[0]["id"] for r in results] == [1, 2, 3]
    assert results[0][1] == Issue(id=1, title="a", user=User(login="u")) and results[0][2] is None
    assert results[1][1] is None
    err = results[1][2]
    assert isinstance(err, PayloadValidationError) and err.field == "title" and "/issues" in str(err)
    assert err.raw == page[1]
    assert results[2][1] is not None
    # without a model, raw items pass through
    client, *_ = make([ok(page)])
    assert [r for r in client.iter_items("/issues", paginator=PageNumberPaginator(per_page=10))] == [(p, None, None) for p in page]


def test_paginate_retries_mid_stream() -> None:
    client, script, sleeps, _ = make(
        [ok([{"id": 1}, {"id": 2}]), httpx.Response(502), ok([{"id": 3}])], jitter=lambda: 0.0
    )
    pages = list(client.paginate("/p", paginator=PageNumberPaginator(per_page=2)))
    assert pages == [[{"id": 1}, {"id": 2}], [{"id": 3}]]
    assert [r.url.params["page"] for r in script.requests] == ["1", "2", "2"]
    assert sleeps == [0.0]
