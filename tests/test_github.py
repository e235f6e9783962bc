"""The GitHub providers end to end: real Dagster job, real local fake GitHub server, both databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus
from sqlalchemy import func, select

from integrations_dagster import DefinitionsRef, Store, execute_sync
from integrations_dagster.store import models as m
from providers.github.fake_api import FakeGitHub
from providers.github.tables import GITHUB_TABLES, activities, github_issues
from tests.support import gh_app

TOKEN = "ghp_s3cretTOKENvalue123"
SLEEPS: list[float] = []


def fast_sleep(seconds: float) -> None:
    SLEEPS.append(seconds)
    time.sleep(min(seconds, 0.01))


@pytest.fixture(autouse=True)
def _plaintext_and_fast(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    gh_app.HTTP_OPTIONS.clear()
    gh_app.HTTP_OPTIONS.update({"sleep": fast_sleep})
    SLEEPS.clear()
    yield
    gh_app.HTTP_OPTIONS.clear()


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=350, token=TOKEN) as server:
        yield server


def ref(db_url: str, **settings: Any) -> DefinitionsRef:
    return DefinitionsRef("tests.support.gh_app", "make_defs", {"database_url": db_url, "settings": settings})


def github(store: Store, fake: FakeGitHub, *, token: str = TOKEN, since: str | None = "2000-01-01T00:00:00Z"):  # type: ignore[no-untyped-def]
    meta = {"owner": fake.owner, "repo": fake.repo, "base_url": fake.url}
    if since:
        meta["since"] = since
    return store.create_integration(provider_key="github", name="gh", metadata=meta, credentials={"token": token})


def count(store: Store, table: Any, integration_id: int) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.integration_id == integration_id)
        ).scalar_one()


def issue_requests(fake: FakeGitHub) -> list[str]:
    return [p for _, p in fake.requests if p.startswith(f"/repos/{fake.owner}/{fake.repo}/issues")]


def latest(store: Store, integration_id: int) -> dict:
    return store.runs_for_integration(integration_id, limit=1)[0]


def test_first_sync_then_incremental_only_fetches_changes(store, db_url, fake, dagster_instance):
    integ = github(store, fake)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert count(store, github_issues, integ.id) == 350
    sr = latest(store, integ.id)
    assert sr["request_count"] == 4 == len(issue_requests(fake))  # 350 issues, 100 per page
    newest = max(fake.issue(n)["updated_at"] for n in range(1, 351))
    assert store.get_integration(integ.id).cursor == newest
    with store.engine.connect() as conn:
        row = conn.execute(select(github_issues).where(github_issues.c.issue_id == fake.issue_id(7))).first()
        logged = conn.execute(select(m.requests_log).where(m.requests_log.c.sync_run_id == sr["id"])).all()
    assert row.number == 7 and row.title == fake.issue(7)["title"] and row.raw["id"] == fake.issue_id(7)
    assert row.user_login == fake.issue(7)["user"]["login"]
    assert [r.status_code for r in logged] == [200] * 4 and all("since=" in r.url for r in logged)
    mat = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(["integrations", "github"]), asset_partitions=[str(integ.id)]), limit=1
    ).records[0].asset_materialization
    assert mat.metadata["requests"].value == 4
    assert mat.metadata["request_ids"].value == str(sorted(r.id for r in logged)).replace(" ", " ")

    fake.reset_counts()
    bumped = fake.bump(5)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert len(issue_requests(fake)) == 1  # only the changed issues, one page
    sr = latest(store, integ.id)
    assert set(bumped) <= {i["external_id"] and int(i["external_id"]) for i in store.items_for_run(sr["id"])}
    assert sr["items_total"] <= 6  # the bumped issues (+ the one at the old cursor: since is inclusive)
    assert count(store, github_issues, integ.id) == 350  # upserts, no duplicates
    assert store.get_integration(integ.id).cursor == max(fake.issue(n)["updated_at"] for n in range(1, 351))


def test_first_run_starts_24_hours_back(store, db_url, fake, dagster_instance):
    integ = github(store, fake, since=None)
    execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    expected = sum(1 for n in range(1, 351) if fake.issue(n)["updated_at"] >= cutoff)
    assert 0 < expected < 350
    assert count(store, github_issues, integ.id) == expected
    assert "since=" + cutoff[:10] in issue_requests(fake)[0]


def test_429_and_5xx_storms_still_sync_every_issue(store, db_url, fake, dagster_instance):
    integ = github(store, fake)
    fake.fail_next(2, status=429, retry_after="0")
    fake.fail_next(2, status=403, retry_after="garbage")  # GitHub's secondary limit
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert count(store, github_issues, integ.id) == 350
    # Retry-After "0" waits the 1 s minimum, "garbage" the 60 s default: never a hot loop
    assert SLEEPS[:3] == [1.0, 1.0, 60.0] and min(SLEEPS) > 0, SLEEPS[:10]
    bumped = fake.bump(120)
    fake.fail_next(4, status=502)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert latest(store, integ.id)["success_count"] >= len(bumped)
    statuses = [r.status_code for r in _requests(store, integ.id)]
    assert statuses.count(429) == 2 and statuses.count(403) == 2 and statuses.count(502) == 4
    with store.engine.connect() as conn:
        stored = dict(conn.execute(select(github_issues.c.issue_id, github_issues.c.updated_at)).all())
    assert all(stored[i] == fake.issue(i - 1_000_000)["updated_at"] for i in bumped)


def _requests(store: Store, integration_id: int) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(
            select(m.requests_log).where(m.requests_log.c.integration_id == integration_id).order_by(m.requests_log.c.id)
        ).all()


def test_bad_token_fails_clearly_keeps_cursor_and_hurts_health(store, db_url, fake, dagster_instance):
    integ = github(store, fake, token="wrong-token-123456")
    store.update_integration(integ.id, cursor="2001-01-01T00:00:00Z")
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = latest(store, integ.id)
    assert sr["status"] == "failed" and sr["auth_failure"] is True
    assert "401" in sr["error"] and "Bad credentials" in sr["error"]
    after = store.get_integration(integ.id)
    assert after.cursor == "2001-01-01T00:00:00Z"
    assert after.consecutive_auth_failures == 1 and after.health != "healthy"
    # the token never reaches the request log, the sync run or Dagster's event log
    logs = " ".join(str(e) for e in dagster_instance.all_logs(run.run_id))
    assert "wrong-token-123456" not in logs + str(sr) + str(_requests(store, integ.id))
    assert _requests(store, integ.id)[0].auth_failure is True


def test_malformed_item_is_tracked_failed_and_holds_the_cursor(store, db_url, fake, dagster_instance):
    integ = github(store, fake)
    ordered = sorted(range(1, 351), key=lambda n: (fake.issue(n)["updated_at"], n))
    bad = ordered[200]
    fake.malformed_issue_ids.add(fake.issue_id(bad))
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE  # red, visible
    sr = latest(store, integ.id)
    assert (sr["status"], sr["failed_count"], sr["success_count"]) == ("partial", 1, 349)
    [item] = store.failed_items(integration_id=integ.id)
    assert item["external_id"] == str(fake.issue_id(bad))
    assert "/repos/acme/widgets/issues" in item["last_error"] and "updated_at" in item["last_error"]
    assert item["payload"]["raw"]["id"] == fake.issue_id(bad)  # raw payload kept for the operator
    before_bad = fake.issue(ordered[199])["updated_at"]
    cursor = store.get_integration(integ.id).cursor
    assert cursor < before_bad  # does not pass the malformed item (nor items sharing its checkpoint)
    # an operator skips it and reconciles: the cursor moves on
    from integrations_dagster.orchestration.code_location import engine_of

    with store.begin() as conn:
        conn.execute(m.sync_items.update().where(m.sync_items.c.id == item["id"]).values(status="skipped"))
    result = engine_of(ref(db_url).load()).reconcile(store, sr["id"])
    assert result.status == "success"
    assert store.get_integration(integ.id).cursor == max(fake.issue(n)["updated_at"] for n in ordered if n != bad)


def test_activity_provider_keeps_a_structured_cursor(store, db_url, fake, dagster_instance):
    integ = store.create_integration(
        provider_key="github_activity", name="act",
        metadata={"base_url": fake.url, "since": "2000-01-01T00:00:00Z"}, credentials={"token": TOKEN},
    )
    run = execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    cursor = store.get_integration(integ.id).cursor
    assert set(cursor) == {"notifications", "events"}
    total = count(store, activities, integ.id)
    assert total == 50 + 90  # the fake's notifications and events
    with store.engine.connect() as conn:
        texts = [r.text for r in conn.execute(select(activities).where(activities.c.stream == "events")).all()]
    assert all(t.startswith("octocat ") for t in texts)
    run = execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    assert latest(store, integ.id)["items_total"] == 0 and store.get_integration(integ.id).cursor == cursor


def test_two_concurrent_clients_share_one_budget(store, fake):
    """Two workers on one integration never exceed the budget in any window, and use most of it."""
    from integrations_dagster import Integration, RateLimit
    from integrations_dagster.authoring.context import DbRateBudget
    from integrations_dagster.http import ApiClient

    integ = github(store, fake)
    limit = RateLimit.per_second(8)
    grants: list[float] = []
    lock = threading.Lock()

    class Recording(DbRateBudget):
        def acquire(self) -> float:
            wait = super().acquire()
            if wait == 0:
                with lock:
                    grants.append(time.time())
            return wait

    def worker() -> None:
        client = ApiClient(base_url=fake.url, headers={"Authorization": f"Bearer {TOKEN}"},
                           budget=Recording(store, integ.id, limit, prune_every=10**9),
                           budget_wait_max=30)
        with client:
            for _ in range(12):
                client.get_json("/user")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    assert len(grants) == 24
    with store.engine.connect() as conn:
        granted = sorted(conn.execute(select(m.rate_budget_grants.c.granted_at)).scalars())
    assert len(granted) == 24
    worst = max(sum(1 for g in granted if s <= g < s + 1.0) for s in granted)
    assert worst <= 8
    assert elapsed >= 2.0  # 24 requests at 8/s cannot finish sooner
    assert elapsed < 6.0  # ...and the budget is used, not wasted
    del Integration


def test_listener_requests_share_the_budget_and_are_deferred_not_failed(store, db_url, fake, dagster_instance):
    """Item work that finds the budget spent raises RateLimited: deferred, never a counted try."""
    gh_app.DETAIL_CALLS.clear()
    integ = store.create_integration(provider_key="github_detail", name="d",
                                     metadata={"base_url": fake.url, "numbers": [1, 2, 3, 4, 5]},
                                     credentials={"token": TOKEN})
    ref_ = DefinitionsRef("tests.support.gh_app", "make_detail_defs", {"database_url": db_url})
    run = execute_sync(ref_, "github_detail", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert sorted(gh_app.DETAIL_CALLS) == [1, 2, 3, 4, 5]
    items = store.items_for_run(latest(store, integ.id)["id"])
    assert all(i["status"] == "success" and i["attempts"] == 1 for i in items)
    assert sum(i["deferrals"] for i in items) >= 1  # 5 requests at 2/s: some had to wait their turn
    logged = _requests(store, integ.id)
    assert len(logged) == 5 and all(r.sync_run_id == latest(store, integ.id)["id"] for r in logged)
    assert latest(store, integ.id)["request_count"] == 5


def test_staged_sql_upsert_stores_the_same_rows_as_the_python_path(pg_store):
    """PostgreSQL upserts issues with one INSERT ... SELECT from the staged events; SQLite (and any
    other database) builds the rows in Python with issue_row. Both must store the same thing,
    including the awkward cases, and a batch that holds one issue twice keeps its latest version."""
    from integrations_dagster import StagedBatch, SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.github import GitHubIssueSynced, GitHubProvider, issue_row, upsert_github_issues

    store = pg_store
    base = {"state": "open", "created_at": "2024-01-01T00:00:00Z", "html_url": "https://x/1"}
    issues = [
        {**base, "id": 1, "number": 1, "title": 'quotes " and \\ backslash', "user": {"login": "a"},
         "labels": [{"name": "bug"}, {"name": "p1"}], "updated_at": "2024-01-02T00:00:00Z", "extra": {"n": [1]}},
        {**base, "id": 2, "number": 2, "title": "ünïcødé ✓", "user": None, "labels": [],
         "updated_at": "2024-01-03T00:00:00Z"},
        {"id": 3, "number": 3, "title": "no url", "state": "closed", "user": {"login": "b"}, "labels": [],
         "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-04T00:00:00Z"},
        {**base, "id": 1, "number": 1, "title": "issue 1, edited later in the same run", "user": {"login": "a"},
         "labels": [{"name": "bug"}], "updated_at": "2024-01-05T00:00:00Z"},
    ]
    engine = SyncEngine(providers=[GitHubProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    integ = store.create_integration(provider_key="github", name="g", metadata={"owner": "o", "repo": "r"})
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status="pending", attempts=0, deferrals=0,
                 external_id=str(i["id"]), checkpoint=i["updated_at"],
                 event_type="providers.github:GitHubIssueSynced",
                 payload=GitHubIssueSynced(integration_id=integ.id, issue=i).model_dump_json(),
                 created_at=engine.clock())
            for i in issues
        ])
    ids = [it["id"] for it in store.items_for_run(start.run_id)]
    store.ensure_provider_tables(GITHUB_TABLES)  # what the engine does before it runs the provider
    with store.begin() as conn:
        upsert_github_issues(StagedBatch(conn, ids, GitHubIssueSynced))
    with store.engine.connect() as conn:
        stored = {r.issue_id: dict(r._mapping) for r in conn.execute(select(github_issues))}
    latest_by_id = {i["id"]: i for i in issues}  # the later dispatch of issue 1 wins
    expected = {k: issue_row(GitHubIssueSynced(integration_id=integ.id, issue=v)) for k, v in latest_by_id.items()}
    assert stored == expected


def test_calls_made_while_a_listing_prefetches_share_the_client_safely(fake):
    """A provider may call the API per item while ``iter_items`` fetches the next pages on its
    worker thread: both use one client (one connection pool, one budget, one request log)."""
    from integrations_dagster.http import ApiClient, LinkHeaderPaginator

    recorded: list[Any] = []

    class Recorder:
        def record(self, entry: Any) -> None:
            recorded.append(entry)

    with ApiClient(base_url=fake.url, headers={"Authorization": f"Bearer {TOKEN}"}, recorder=Recorder()) as api:
        numbers, details = [], {}
        params = {"since": "2000-01-01T00:00:00Z", "state": "all", "sort": "updated", "direction": "asc",
                  "per_page": 100}
        for raw, _parsed, error in api.iter_items(f"/repos/{fake.owner}/{fake.repo}/issues", params=params,
                                                  paginator=LinkHeaderPaginator(), prefetch=3):
            assert error is None
            numbers.append(raw["number"])
            if raw["number"] % 25 == 0:
                details[raw["number"]] = api.get_json(f"/repos/{fake.owner}/{fake.repo}/issues/{raw['number']}")
    assert sorted(numbers) == list(range(1, 351)) and len(numbers) == 350
    assert {n: d["title"] for n, d in details.items()} == {n: fake.issue(n)["title"] for n in range(25, 351, 25)}
    assert len(recorded) == 4 + 14 and all(e.status_code == 200 for e in recorded)
    assert all(TOKEN not in e.url for e in recorded)
