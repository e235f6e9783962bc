"""The fake GitHub server, exercised over real loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest

from providers.github.fake_api import FakeGitHub
from integrations_dagster.http import ApiClient, AuthenticationError, LinkHeaderPaginator, RateLimitedError

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
ISSUES = "/repos/acme/widgets/issues"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(issues=250, now=NOW, seed=1) as fake:
        yield fake


@pytest.fixture
def http(gh: FakeGitHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gh.url, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


def all_pages(http: httpx.Client, params: dict[str, object]) -> tuple[list[dict], list[httpx.Response]]:
    responses = [http.get(ISSUES, params=params)]
    while "next" in responses[-1].links:
        responses.append(http.get(responses[-1].links["next"]["url"]))
    items = [i for r in responses for i in r.json()]
    return items, responses


def test_deterministic_data_shape(gh: FakeGitHub) -> None:
    other = FakeGitHub(issues=250, now=NOW, seed=1)
    assert other.issue(17) == gh.issue(17)
    issue = gh.issue(1)
    assert issue["id"] == 1_000_001 and issue["number"] == 1
    assert set(issue) >= {"id", "number", "title", "state", "user", "labels", "created_at", "updated_at", "html_url", "body"}
    assert issue["state"] in ("open", "closed") and isinstance(issue["user"]["login"], str)
    for n in range(1, 251):
        i = gh.issue(n)
        created = datetime.fromisoformat(i["created_at"].replace("Z", "+00:00"))
        updated = datetime.fromisoformat(i["updated_at"].replace("Z", "+00:00"))
        assert (NOW - created).days <= 30 and created <= updated <= NOW
        assert i["updated_at"].endswith("Z")


def test_paging_with_link_headers_covers_every_issue_once(gh: FakeGitHub, http: httpx.Client) -> None:
    items, responses = all_pages(http, {"state": "all", "per_page": 100})
    assert len(responses) == 3
    assert sorted(i["number"] for i in items) == list(range(1, 251))
    first = responses[0].links
    assert first["next"]["url"].startswith(gh.url) and "page=2" in first["next"]["url"]
    assert "page=3" in first["last"]["url"] and "state=all" in first["last"]["url"]
    assert "next" not in responses[-1].links and "prev" in responses[-1].links
    assert [len(r.json()) for r in responses] == [100, 100, 50]


def test_default_state_open_default_per_page_and_per_page_cap(gh: FakeGitHub, http: httpx.Client) -> None:
    page = http.get(ISSUES).json()
    assert len(page) == 30 and all(i["state"] == "open" for i in page)
    assert len(http.get(ISSUES, params={"per_page": 500, "state": "all"}).json()) == 100
    closed, _ = all_pages(http, {"state": "closed", "per_page": 100})
    open_, _ = all_pages(http, {"state": "open", "per_page": 100})
    assert len(closed) + len(open_) == 250 and closed and all(i["state"] == "closed" for i in closed)
    assert http.get(ISSUES, params={"state": "all", "page": 99}).json() == []
    assert http.get(ISSUES, params={"state": "bogus"}).status_code == 422


def test_sort_and_direction(http: httpx.Client) -> None:
    items, _ = all_pages(http, {"state": "all", "per_page": 100, "sort": "updated", "direction": "asc"})
    keys = [(i["updated_at"], i["number"]) for i in items]
    assert keys == sorted(keys)
    items, _ = all_pages(http, {"state": "all", "per_page": 100})  # default: created desc
    keys = [(i["created_at"], i["number"]) for i in items]
    assert keys == sorted(keys, reverse=True)


def test_since_filters_on_updated_at(gh: FakeGitHub, http: httpx.Client) -> None:
    everything, _ = all_pages(http, {"state": "all", "per_page": 100})
    cutoff = sorted(i["updated_at"] for i in everything)[200]
    for sort in ("updated", "created"):
        items, _ = all_pages(http, {"state": "all", "per_page": 100, "since": cutoff, "sort": sort})
        expected = {i["number"] for i in everything if i["updated_at"] >= cutoff}
        assert {i["number"] for i in items} == expected and len(items) == len(expected)
    assert http.get(ISSUES, params={"since": "not-a-date"}).status_code == 422


def test_single_issue_user_and_404(http: httpx.Client, gh: FakeGitHub) -> None:
    assert http.get(f"{ISSUES}/7").json() == gh.issue(7)
    assert http.get(f"{ISSUES}/9999").status_code == 404
    assert http.get("/repos/other/repo/issues").status_code == 404
    assert http.get("/user").json()["login"] == "octocat"


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "token wrong", "Basic dGVzdC10b2tlbg=="])
def test_bad_or_missing_token_is_401(gh: FakeGitHub, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = httpx.get(f"{gh.url}/user", headers=headers)
    assert r.status_code == 401 and r.json()["message"] == "Bad credentials"
    assert httpx.get(f"{gh.url}/user", headers={"Authorization": "token test-token"}).status_code == 200


def test_fault_injection_429_then_success_through_api_client(gh: FakeGitHub) -> None:
    gh.fail_next(2, status=429, retry_after="1")
    sleeps: list[float] = []
    with ApiClient(base_url=gh.url, headers={"Authorization": "Bearer test-token"}, sleep=sleeps.append) as api:
        assert api.get_json("/user")["login"] == "octocat"
    assert sleeps == [1.0, 1.0] and gh.request_count == 3


def test_fault_injection_403_secondary_and_5xx(gh: FakeGitHub, http: httpx.Client) -> None:
    gh.fail_next(1, status=403, retry_after=None)
    r = http.get("/user")
    assert r.status_code == 403 and "secondary rate limit" in r.json()["message"] and "Retry-After" not in r.headers
    gh.fail_next(1, status=502)
    assert http.get("/user").status_code == 502
    assert http.get("/user").status_code == 200
    gh.fail_next(1, status=500, path_prefix="/notifications")
    assert http.get("/user").status_code == 200
    assert http.get("/notifications").status_code == 500


def test_malformed_issues_are_served_broken(gh: FakeGitHub, http: httpx.Client) -> None:
    gh.malformed_issue_ids.add(gh.issue_id(3))
    items, _ = all_pages(http, {"state": "all", "per_page": 100})
    broken = [i for i in items if i["number"] == 3]
    assert broken and broken[0]["updated_at"] is None and "title" not in broken[0]
    assert all("title" in i for i in items if i["number"] != 3)


def test_bump_makes_issues_visible_to_the_next_incremental_sync(gh: FakeGitHub, http: httpx.Client) -> None:
    everything, _ = all_pages(http, {"state": "all", "per_page": 100, "sort": "updated", "direction": "asc"})
    cursor = everything[-1]["updated_at"]
    bumped = gh.bump([gh.issue_id(5), gh.issue_id(6)])
    assert bumped == [1_000_005, 1_000_006]
    newer = [i for i in all_pages(http, {"state": "all", "since": cursor, "sort": "updated", "direction": "asc"})[0] if i["updated_at"] > cursor]
    assert [i["number"] for i in newer] == [5, 6]
    more = gh.bump(3)
    assert len(set(more)) == 3
    added = gh.add_issues(2)
    assert added == [1_000_251, 1_000_252]
    items, _ = all_pages(http, {"state": "all", "per_page": 100, "sort": "updated", "direction": "asc"})
    keys = [(i["updated_at"], i["number"]) for i in items]
    assert keys == sorted(keys) and len(items) == 252
    assert [i["id"] for i in items[-2:]] == added  # newest


def test_rate_limit_headers_and_primary_limit(gh: FakeGitHub, http: httpx.Client) -> None:
    r = http.get("/user")
    assert r.headers["X-RateLimit-Limit"] == "5000" and r.headers["X-RateLimit-Remaining"] == "4999"
    assert int(r.headers["X-RateLimit-Reset"]) > time.time()
    gh.set_rate_limit(2, window=1.0)
    assert http.get("/user").headers["X-RateLimit-Remaining"] == "1"
    assert http.get("/user").headers["X-RateLimit-Remaining"] == "0"
    r = http.get("/user")
    assert r.status_code == 403 and r.headers["X-RateLimit-Remaining"] == "0"
    # the ApiClient classifies it as a rate limit (not an auth failure) and defers long waits
    with ApiClient(base_url=gh.url, headers={"Authorization": "Bearer test-token"}, sleep=lambda s: None,
                   max_attempts=1) as api:
        with pytest.raises(RateLimitedError):
            api.get_json("/user")
    time.sleep(max(0.0, int(r.headers["X-RateLimit-Reset"]) - time.time()) + 0.05)
    assert http.get("/user").status_code == 200


def test_notifications_and_events_paging(gh: FakeGitHub, http: httpx.Client) -> None:
    first = http.get("/notifications", params={"per_page": 20})
    assert len(first.json()) == 20 and "next" in first.links
    with ApiClient(base_url=gh.url, headers={"Authorization": "token test-token"}) as api:
        notes = [n for page in api.paginate("/notifications", params={"per_page": 20}, paginator=LinkHeaderPaginator()) for n in page]
        assert len(notes) == 50 and len({n["id"] for n in notes}) == 50
        since = sorted(n["updated_at"] for n in notes)[25]
        recent = [n for page in api.paginate("/notifications", params={"since": since}, paginator=LinkHeaderPaginator()) for n in page]
        assert {n["id"] for n in recent} == {n["id"] for n in notes if n["updated_at"] >= since}
        events = [e for page in api.paginate("/users/octocat/events", params={"per_page": 30}, paginator=LinkHeaderPaginator()) for e in page]
    assert len(events) == 90
    assert all({"id", "type", "created_at", "repo", "payload"} <= set(e) for e in events)
    assert events[0]["repo"]["name"] == "acme/widgets"
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)


def test_request_counting_and_reset(gh: FakeGitHub, http: httpx.Client) -> None:
    http.get("/user")
    http.get(ISSUES, params={"state": "all", "page": 2})
    httpx.get(f"{gh.url}/user")  # unauthenticated requests count too
    assert gh.request_count == 3
    assert gh.requests[:2] == [("GET", "/user"), ("GET", f"{ISSUES}?state=all&page=2")]
    gh.reset_counts()
    assert gh.request_count == 0 and gh.requests == []


def test_slow_delays_responses(gh: FakeGitHub, http: httpx.Client) -> None:
    gh.slow(0.2)
    start = time.perf_counter()
    http.get("/user")
    assert time.perf_counter() - start >= 0.2
    gh.slow(0)


def test_not_started_and_restart() -> None:
    fake = FakeGitHub(issues=1)
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    url = fake.url
    assert httpx.get(f"{url}/user", headers={"Authorization": "Bearer test-token"}).status_code == 200
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/user")


def test_serves_ten_thousand_issues_quickly() -> None:
    with FakeGitHub(issues=10_000, now=NOW) as fake, ApiClient(
        base_url=fake.url, headers={"Authorization": "Bearer test-token"}
    ) as api:
        start = time.perf_counter()
        count = sum(len(p) for p in api.paginate(ISSUES, params={"state": "all", "per_page": 100}, paginator=LinkHeaderPaginator()))
        elapsed = time.perf_counter() - start
    assert count == 10_000 and fake.request_count == 100
    assert elapsed < 5.0  # generous: CI boxes are shared; typically < 1 s


def test_api_client_sees_bad_token_as_authentication_error_without_leaking_it(gh: FakeGitHub) -> None:
    recorded = []

    class Rec:
        def record(self, entry: object) -> None:
            recorded.append(entry)

    with ApiClient(base_url=gh.url, headers={"Authorization": "Bearer wrong-token-xyz"}, recorder=Rec()) as api:
        with pytest.raises(AuthenticationError) as info:
            api.get_json("/user")
    assert info.value.status_code == 401 and "Bad credentials" in str(info.value)
    assert gh.request_count == 1 and recorded[0].auth_failure
    assert "wrong-token-xyz" not in str(info.value) + repr(recorded)
