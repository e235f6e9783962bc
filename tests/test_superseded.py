"""Superseded items (issue 9 point 2), on SQLite and PostgreSQL.

Retrying an old failed version of an item must never overwrite a newer version that succeeded
since (in a later run, or later in the same run). Such an item is ``superseded``: not retried by
``retry-item``, "retry failed items", a re-execution or a retry inside the chunk step; shown as
superseded (status, timeline, the item itself; not in list-failed-items); it holds no cursor. The
bundled GitHub upsert never replaces a row with an older ``updated_at``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from integrations_dagster import IntegrationsError, Provider, SyncItemEvent, SyncSettings, listener
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.engine.supersede import Version, candidates, supersessions
from integrations_dagster.operations import actions as ops


class Issue(SyncItemEvent):
    number: int
    version: str


#: What the provider dispatches next: (external id, version, checkpoint).
FEED: list[tuple[str, str, str]] = []
#: The destination: external id -> version last written (a blind overwrite, like a naive upsert).
DEST: dict[str, str] = {}
CALLS: list[tuple[str, str]] = []
#: Versions whose listener call fails.
BROKEN: set[str] = set()


@listener(Issue)
def write(event: Issue) -> None:
    CALLS.append((str(event.number), event.version))
    if event.version in BROKEN:
        raise RuntimeError(f"cannot write {event.version}")
    DEST[str(event.number)] = event.version


class Issues(Provider):
    key = "issues"

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for ext, version, cp in FEED:
            session.dispatch(Issue(number=int(ext), version=version), checkpoint_value=cp, external_id=ext)


@pytest.fixture(autouse=True)
def _clean():  # type: ignore[no-untyped-def]
    for x in (FEED, DEST, CALLS, BROKEN):
        x.clear()
    yield
    for x in (FEED, DEST, CALLS, BROKEN):
        x.clear()


def engine_for(**settings: Any) -> SyncEngine:
    settings.setdefault("item_tries", 1)
    return SyncEngine(providers=[Issues()], listeners=ListenerRegistry.build([write]),
                      settings=SyncSettings(item_backoff=[0], **settings))


def start(engine: SyncEngine, store, integration_id: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    s = engine.start_run(store, integration_id, dagster_run_id=None)
    assert not s.skipped, s.skipped_reason
    res = engine.enumerate(store, store.get_integration(integration_id), s.run_id)
    return s.run_id, res.chunks


def sync(engine: SyncEngine, store, integration_id: int):  # type: ignore[no-untyped-def]
    run_id, chunks = start(engine, store, integration_id)
    for chunk in range(chunks):
        engine.process_chunk(store, run_id, chunk)
    return engine.reconcile(store, run_id)


def item_of(store, run_id: int, version: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    [it] = [i for i in store.items_for_run(run_id) if i["payload"]["version"] == version]
    return it


def run_a_fails_v1_then_run_b_writes_v2(store, engine):  # type: ignore[no-untyped-def]
    """Run A: issue 42 v1 fails. Run B: v2 succeeds (its chunk ran; B not reconciled yet)."""
    integ = store.create_integration(provider_key="issues", name="i")
    BROKEN.add("v1")
    FEED[:] = [("42", "v1", "2024-01-01T00:00:01Z")]
    a = sync(engine, store, integ.id)
    assert a.status == "failed"
    BROKEN.clear()
    FEED[:] = [("42", "v2", "2024-01-01T00:00:02Z")]
    b, chunks = start(engine, store, integ.id)
    for chunk in range(chunks):
        engine.process_chunk(store, b, chunk)
    assert DEST == {"42": "v2"}
    return integ, a.run_id, b


# --- the pure decision ----------------------------------------------------------------------------
def test_only_an_older_unfinished_or_failed_version_is_superseded_by_a_later_success():
    items = [Version(1, "a", "failed"), Version(2, "a", "pending"), Version(3, "b", "failed"),
             Version(4, None, "failed"), Version(5, "c", "success"), Version(6, "d", "skipped"),
             Version(9, "a", "processing")]
    assert candidates(items) == ["a", "b"]
    latest = {"a": 5, "b": 2, "c": 7, "d": 8}
    # a: 1, 2 are older than the success 5; 9 is newer. b: the success 2 is older than 3.
    # c: already a success; d: skipped by an operator, not superseded.
    assert supersessions(items, latest) == {1: 5, 2: 5}
    assert supersessions(items, {}) == {}


# --- through the engine and the operator actions -------------------------------------------------
def test_retry_item_never_applies_an_older_version_over_a_newer_one(store):
    engine = engine_for()
    integ, run_a, run_b = run_a_fails_v1_then_run_b_writes_v2(store, engine)
    v1 = item_of(store, run_a, "v1")
    res = ops.retry_item(store, engine, v1["id"])
    assert res.item_status == "superseded"
    assert f"superseded by sync item {item_of(store, run_b, 'v2')['id']}" in res.skip_reason
    assert DEST == {"42": "v2"}  # before the fix: v1 was written over v2
    assert CALLS.count(("42", "v1")) == 1  # only the first, failed, attempt
    assert store.get_item(v1["id"])["status"] == "superseded"
    assert ops.list_failed_items(store, integration_id=integ.id) == []
    assert engine.reconcile(store, run_b).status == "success"
    assert store.get_run(run_a)["status"] == "success"  # nothing of it is failed any more
    with pytest.raises(IntegrationsError, match="superseded, not failed"):
        ops.retry_item(store, engine, v1["id"])


def test_retry_failed_items_skips_superseded_ones_and_operators_see_them(store):
    engine = engine_for()
    integ, run_a, run_b = run_a_fails_v1_then_run_b_writes_v2(store, engine)
    res = ops.retry_failed_items(store, engine, integ.id)
    assert (res.retried, res.succeeded, res.still_failed, res.superseded) == (0, 0, 0, 1)
    assert DEST == {"42": "v2"}
    engine.reconcile(store, run_b)
    [row] = ops.status_rows(store, integration_id=integ.id)
    assert (row["failed_items"], row["superseded_items"]) == (0, 1)
    by_run = {r["id"]: r for r in ops.timeline(store, integ.id)}
    assert (by_run[run_a]["status"], by_run[run_a]["failed"], by_run[run_a]["superseded"]) == ("success", 0, 1)
    assert (by_run[run_b]["status"], by_run[run_b]["succeeded"]) == ("success", 1)


def test_a_later_run_supersedes_older_failures_when_it_settles(store):
    engine = engine_for()
    integ, run_a, run_b = run_a_fails_v1_then_run_b_writes_v2(store, engine)
    assert ops.list_failed_items(store, integration_id=integ.id) != []
    engine.reconcile(store, run_b)
    assert ops.list_failed_items(store, integration_id=integ.id) == []
    assert item_of(store, run_a, "v1")["status"] == "superseded"
    run = store.get_run(run_a)
    assert (run["status"], run["failed_count"], run["superseded_count"]) == ("success", 0, 1)


def test_reexecution_does_not_reopen_a_superseded_item(store):
    engine = engine_for()
    integ, run_a, run_b = run_a_fails_v1_then_run_b_writes_v2(store, engine)
    engine.process_chunk(store, run_a, 0, reopen_failed=True)  # re-execution from failure of run A
    assert DEST == {"42": "v2"}
    assert CALLS.count(("42", "v1")) == 1
    assert item_of(store, run_a, "v1")["status"] == "superseded"
    assert engine.reconcile(store, run_a).status == "success"


def test_an_item_dispatched_twice_in_one_run_does_not_hold_the_cursor(store):
    """Issue 42 edited while the provider paged: v1 (chunk 0) fails, v2 (chunk 2) succeeds."""
    engine = engine_for(chunk_size=1)
    integ = store.create_integration(provider_key="issues", name="i")
    BROKEN.add("v1")
    FEED[:] = [("42", "v1", "2024-01-01T00:00:01Z"), ("7", "x", "2024-01-01T00:00:02Z"),
               ("42", "v2", "2024-01-01T00:00:03Z")]
    res = sync(engine, store, integ.id)
    # before the fix: partial, the cursor held before v1, and retrying v1 overwrote v2
    assert (res.status, res.cursor_after) == ("success", "2024-01-01T00:00:03Z")
    assert store.get_run(res.run_id)["superseded_count"] == 1
    assert DEST == {"42": "v2", "7": "x"}
    assert ops.list_failed_items(store, integration_id=integ.id) == []


def test_an_older_version_retried_inside_the_step_stops_once_the_newer_one_succeeded(store):
    """v1 fails its first try; before its retry, another step (chunk 1) writes v2: v1 is not retried."""
    engine = engine_for(chunk_size=1, item_tries=3, inline_wait_max=10)
    integ = store.create_integration(provider_key="issues", name="i")
    run: dict[str, int] = {}

    @listener(Issue)
    def write_and_race(event: Issue) -> None:
        CALLS.append((str(event.number), event.version))
        if event.version == "v1":
            if len(CALLS) == 1:  # the other chunk runs (another executor) while v1 waits for its retry
                engine.process_chunk(store, run["id"], 1)
            raise RuntimeError("v1 is slow to write")
        DEST[str(event.number)] = event.version

    engine.listeners = ListenerRegistry.build([write_and_race])
    FEED[:] = [("42", "v1", "2024-01-01T00:00:01Z"), ("42", "v2", "2024-01-01T00:00:02Z")]
    run["id"], chunks = start(engine, store, integ.id)
    assert chunks == 2
    engine.process_chunk(store, run["id"], 0)
    assert CALLS == [("42", "v1"), ("42", "v2")]  # before the fix v1 was tried again (up to 3 times)
    assert DEST == {"42": "v2"}
    res = engine.reconcile(store, run["id"])
    assert (res.status, res.cursor_after) == ("success", "2024-01-01T00:00:02Z")


# --- the bundled GitHub upsert --------------------------------------------------------------------
def test_github_upsert_never_replaces_a_row_with_an_older_updated_at(store):
    from integrations_dagster import StagedBatch
    from providers.github import GitHubIssueSynced, GitHubProvider, upsert_github_issues
    from providers.github.tables import GITHUB_TABLES, github_issues

    store.ensure_provider_tables(GITHUB_TABLES)
    integ = store.create_integration(provider_key="github", name="g", metadata={"owner": "o", "repo": "r"})
    base = {"id": 42, "number": 42, "state": "open", "user": None, "labels": [], "created_at": "2024-01-01T00:00:00Z"}

    gh = SyncEngine(providers=[GitHubProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())

    def deliver(*versions: tuple[str, str]) -> None:
        run = gh.start_run(store, integ.id, dagster_run_id=None).run_id
        with store.begin() as conn:
            store.insert_items(conn, [
                dict(run_id=run, integration_id=integ.id, chunk=0, status="pending", attempts=0, deferrals=0,
                     external_id="42", checkpoint=updated, event_type="providers.github:GitHubIssueSynced",
                     payload=GitHubIssueSynced(integration_id=integ.id,
                                               issue={**base, "title": title, "updated_at": updated}).model_dump_json(),
                     created_at=store_now())
                for title, updated in versions
            ])
        ids = [it["id"] for it in store.items_for_run(run)]
        with store.begin() as conn:
            upsert_github_issues(StagedBatch(conn, ids, GitHubIssueSynced))
        with store.begin() as conn:  # let the next start_run go ahead
            from integrations_dagster.store import models as m
            conn.execute(m.sync_runs.update().where(m.sync_runs.c.id == run).values(status="success"))

    def stored() -> tuple[str, str]:
        with store.engine.connect() as conn:
            row = conn.execute(select(github_issues.c.title, github_issues.c.updated_at)).one()
        return row.title, row.updated_at

    deliver(("v2", "2024-01-02T00:00:00Z"))
    deliver(("v1", "2024-01-01T12:00:00Z"))  # an old failed version retried later
    assert stored() == ("v2", "2024-01-02T00:00:00Z")
    deliver(("v3", "2024-01-03T00:00:00Z"), ("v2 again", "2024-01-02T00:00:00Z"))  # newest first in one batch
    assert stored() == ("v3", "2024-01-03T00:00:00Z")
    deliver(("v3 same second", "2024-01-03T00:00:00Z"))  # same updated_at: the later delivery wins
    assert stored() == ("v3 same second", "2024-01-03T00:00:00Z")


def store_now():  # type: ignore[no-untyped-def]
    from integrations_dagster.store import utcnow

    return utcnow()


def test_items_of_a_dead_run_delivered_by_the_next_run_no_longer_show_as_failed(store):
    """Issue 9 point 10: a killed run's unfinished items are failed ("abandoned") when the next sync
    reclaims it; once the next run delivers the same external ids they are superseded, not failed."""
    engine = engine_for()
    integ = store.create_integration(provider_key="issues", name="i")
    FEED[:] = [("1", "v1", "2024-01-01T00:00:01Z"), ("2", "v1", "2024-01-01T00:00:02Z")]
    dead = engine.start_run(store, integ.id, dagster_run_id="dead")
    engine.enumerate(store, store.get_integration(integ.id), dead.run_id)  # killed before any chunk ran
    nxt = engine.start_run(store, integ.id, dagster_run_id="next", is_run_alive=lambda _rid: False)
    assert not nxt.skipped
    assert [it["status"] for it in store.items_for_run(dead.run_id)] == ["failed", "failed"]  # abandoned
    res = engine.enumerate(store, store.get_integration(integ.id), nxt.run_id)
    for chunk in range(res.chunks):
        engine.process_chunk(store, nxt.run_id, chunk)
    assert engine.reconcile(store, nxt.run_id).status == "success"
    assert ops.list_failed_items(store, integration_id=integ.id) == []
    run = store.get_run(dead.run_id)
    assert (run["status"], run["failed_count"], run["superseded_count"]) == ("success", 0, 2)
    assert DEST == {"1": "v1", "2": "v1"}
