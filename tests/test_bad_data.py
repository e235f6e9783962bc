"""Bad data never wedges an integration (issue 9, points 5, 6, 9 and 11 d-e), on SQLite and PostgreSQL.

- checkpoints that cannot be reduced (numbers then timestamps, mixed types, dicts under the
  default reducer, a reducer that raises): reconcile never raises, the run settles, health backs
  off, and the operator tools recover;
- one item no database can store as given becomes a recorded invalid item, the rest proceeds;
- ``RateLimited(0)`` does not busy-loop; ``dispatch`` after the session ended raises and writes nothing;
- ISO timestamps of mixed precision; notification listener errors are redacted.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations_dagster import Provider, RateLimited, SyncItemEvent, SyncSettings, listener
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.store.items import max_string_checkpoint
from integrations_dagster.authoring.events import SyncCompleted, SyncItemFailed
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.operations.actions import advance_cursor, retry_failed_items, skip_item
from integrations_dagster.authoring.session import SyncSessionClosed


class Item(SyncItemEvent):
    n: int
    text: str = ""


#: What the provider dispatches next: (checkpoint, external_id, text) per item.
FEED: list[tuple[Any, Any, str]] = []
SEEN: list[int] = []


@listener(Item)
def record(event: Item) -> None:
    SEEN.append(event.n)


class Feed(Provider):
    key = "feed"

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for i, (cp, ext, text) in enumerate(FEED):
            session.dispatch(Item(n=i, text=text), checkpoint_value=cp, external_id=ext)


@pytest.fixture(autouse=True)
def _clean():  # type: ignore[no-untyped-def]
    FEED.clear()
    SEEN.clear()
    yield
    FEED.clear()
    SEEN.clear()


def engine_for(*providers: Provider, listeners: list[Any] | None = None, **settings: Any) -> SyncEngine:
    return SyncEngine(providers=list(providers) or [Feed()], listeners=ListenerRegistry.build(listeners or [record]),
                      settings=SyncSettings(item_backoff=[0], **settings))


def sync(engine: SyncEngine, store, integration_id: int):  # type: ignore[no-untyped-def]
    start = engine.start_run(store, integration_id, dagster_run_id=None)
    assert not start.skipped, start.skipped_reason
    res = engine.enumerate(store, store.get_integration(integration_id), start.run_id)
    for chunk in range(res.chunks):
        engine.process_chunk(store, start.run_id, chunk)
    return engine.reconcile(store, start.run_id)


def feed(*checkpoints: Any) -> None:
    FEED[:] = [(cp, f"e{i}", f"t{i}") for i, cp in enumerate(checkpoints)]


# --- point 5: checkpoints that cannot be reduced ------------------------------------------------
def test_numbers_then_timestamps_fail_the_items_not_the_integration(store):
    engine = engine_for()
    integ = store.create_integration(provider_key="feed", name="f")
    feed(1, 2, 3)
    assert sync(engine, store, integ.id).status == "success"
    assert store.get_integration(integ.id).cursor == 3
    feed("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z")  # the provider moved to timestamps
    res = sync(engine, store, integ.id)  # used to raise TypeError and leave the run processing
    assert (res.status, res.failed_count, res.cursor_after) == ("failed", 2, 3)
    run = store.get_run(res.run_id)
    assert run["status"] == "failed" and run["finished_at"] is not None
    failed = store.failed_items(integration_id=integ.id)
    assert len(failed) == 2
    assert all(f["last_error"].startswith("invalid checkpoint: '2024-05-0") and "cursor 3 (a number)" in f["last_error"]
               for f in failed)
    integ_now = store.get_integration(integ.id)
    assert integ_now.health == "degraded" and integ_now.consecutive_failures == 1  # backs off
    assert engine.reconcile(store, res.run_id).changed is False  # settled: idempotent
    # The operator sets the cursor, then retries: everything is delivered and the cursor moves on.
    adv = advance_cursor(store, engine, integ.id, set_cursor="2024-04-30T00:00:00Z")
    assert adv.cursor_after == "2024-04-30T00:00:00Z"
    again = retry_failed_items(store, engine, integ.id)
    assert (again.succeeded, again.still_failed) == (2, 0)
    assert store.get_integration(integ.id).cursor == "2024-05-02T00:00:00Z"
    assert store.get_run(res.run_id)["status"] == "success"
    feed("2024-05-03T00:00:00Z")  # and the next sync runs as usual
    assert sync(engine, store, integ.id).cursor_after == "2024-05-03T00:00:00Z"
    assert store.get_integration(integ.id).health == "healthy"


def test_dispatch_invalid_with_an_unstorable_raw_payload_keeps_both_errors(store):
    class Raw(Provider):
        key = "feed"

        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            session.dispatch_invalid({"title": "a\x00b"}, "title is not valid", checkpoint_value="00000001",
                                     external_id="r1")
            session.dispatch(Item(n=2), checkpoint_value="00000002", external_id="r2")

    engine = engine_for(Raw())
    integ = store.create_integration(provider_key="feed", name="f")
    res = sync(engine, store, integ.id)
    assert (res.status, res.failed_count, res.success_count) == ("partial", 1, 1)
    [bad] = store.failed_items(integration_id=integ.id)
    assert "invalid item: payload contains a NUL character" in bad["last_error"]
    assert "title is not valid" in bad["last_error"] and bad["external_id"] == "r1"


def test_mixed_types_in_one_run_fail_the_odd_items_and_skip_recovers(store):
    engine = engine_for()
    integ = store.create_integration(provider_key="feed", name="f")
    feed(5, "x", 7, 9)
    res = sync(engine, store, integ.id)
    assert (res.status, res.success_count, res.failed_count, res.cursor_after) == ("partial", 3, 1, None)
    [bad] = store.failed_items(integration_id=integ.id)
    assert bad["external_id"] == "e1"
    assert "cannot be ordered with the other checkpoints of this run" in bad["last_error"]
    from integrations_dagster.operations.actions import retry_item

    again = retry_item(store, engine, bad["id"])  # the listener succeeds, the checkpoint is still odd
    assert again.item_status == "failed" and again.last_error.startswith("invalid checkpoint: ")
    out = skip_item(store, engine, bad["id"], reason="provider bug")
    assert (out.run_status, out.cursor_after) == ("success", 9)


def test_dicts_under_the_default_reducer_fail_clearly_and_advance_cursor_does_not_raise(store):
    engine = engine_for()
    integ = store.create_integration(provider_key="feed", name="f")
    feed({"a": 1}, {"a": 2})
    res = sync(engine, store, integ.id)
    assert (res.status, res.failed_count, res.cursor_after) == ("failed", 2, None)
    failed = store.failed_items(integration_id=integ.id)
    assert all("the default reducer (the maximum) orders numbers or strings only" in f["last_error"] for f in failed)
    advance_cursor(store, engine, integ.id)  # used to raise TypeError
    for f in failed:
        skip_item(store, engine, f["id"])
    assert store.get_run(res.run_id)["status"] == "success" and store.get_integration(integ.id).cursor is None
    assert store.get_integration(integ.id).health == "healthy"


class Merging(Feed):
    """A structured cursor whose reducer raises until it is fixed."""

    key = "merging"
    broken = True

    def reduce_checkpoints(self, checkpoints):  # type: ignore[no-untyped-def]
        if self.broken:
            raise ValueError("cannot merge these")
        return max(checkpoints)


def test_a_reducer_that_raises_fails_the_run_and_recovers_after_the_fix(store):
    provider = Merging()
    engine = engine_for(provider)
    integ = store.create_integration(provider_key="merging", name="m")
    feed(1, 2)
    res = sync(engine, store, integ.id)
    assert (res.status, res.cursor_after) == ("failed", None)
    run = store.get_run(res.run_id)
    assert run["status"] == "failed" and "reduce_checkpoints raised ValueError: cannot merge these" in run["error"]
    assert store.get_integration(integ.id).health == "degraded"
    provider.broken = False  # the provider is fixed and deployed
    adv = advance_cursor(store, engine, integ.id)
    assert adv.cursor_after == 2
    run = store.get_run(res.run_id)
    assert (run["status"], run["error"]) == ("success", None)


def test_set_cursor_refuses_values_no_store_can_hold(store):
    from integrations_dagster.errors import IntegrationsError

    engine = engine_for()
    integ = store.create_integration(provider_key="feed", name="f")
    for value in (float("nan"), "a\x00b", "\ud800"):
        with pytest.raises(IntegrationsError, match="cannot be stored"):
            advance_cursor(store, engine, integ.id, set_cursor=value)
    assert store.get_integration(integ.id).cursor is None


# --- point 6: one bad item does not fail the enumeration ----------------------------------------
# Each unstorable value (over-long external id, NUL, lone surrogate, NaN/Infinity) is a case of the
# bad-input corpus: tests/data/bad_input/dispatch_items.json, driven by tests/test_bad_input.py.
def test_many_good_items_around_bad_ones_all_arrive(store):
    engine = engine_for(flush_every=7, chunk_size=10)
    integ = store.create_integration(provider_key="feed", name="f")
    FEED[:] = [(f"{i:08d}", ("a\x00" if i % 9 == 4 else f"e{i}"), "ok") for i in range(40)]
    res = sync(engine, store, integ.id)
    assert (res.items_total, res.failed_count) == (40, 4)
    assert sorted(SEEN) == [i for i in range(40) if i % 9 != 4]
    assert store.get_integration(integ.id).cursor == "00000003"  # held before the first bad one


# --- point 9: RateLimited(0) and dispatch after the end -----------------------------------------
class Clock:
    """A clock that moves 1 ms per reading and by the slept amount."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.mark.parametrize("retry_after", [0, -5])
def test_rate_limited_zero_waits_a_minimum_instead_of_busy_looping(store, retry_after):
    calls: list[datetime] = []
    clock = Clock()

    @listener(Item)
    def limited(event: Item) -> None:
        calls.append(clock.now)
        raise RateLimited(retry_after)

    engine = SyncEngine(providers=[Feed()], listeners=ListenerRegistry.build([limited]),
                        settings=SyncSettings(item_retry_window=5, inline_wait_max=10, min_deferral=1.0),
                        clock=clock, sleep=clock.sleep)
    integ = store.create_integration(provider_key="feed", name="f")
    feed("00000001")
    res = sync(engine, store, integ.id)
    assert res.status == "failed"
    assert 4 <= len(calls) <= 7, len(calls)  # about one call per second of the 5 s window, not thousands
    assert all((b - a).total_seconds() >= 1.0 for a, b in zip(calls, calls[1:]))


def test_dispatch_after_the_session_ended_raises_and_writes_nothing(store):
    late: list[BaseException] = []
    holder: dict[str, Any] = {}

    class Leaky(Provider):
        key = "feed"

        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            holder["session"] = session
            session.dispatch(Item(n=0), checkpoint_value="00000000", external_id="e0")

    engine = engine_for(Leaky())
    integ = store.create_integration(provider_key="feed", name="f")
    res = sync(engine, store, integ.id)
    assert (res.status, res.items_total) == ("success", 1)

    def helper() -> None:  # a helper thread the provider left behind
        try:
            holder["session"].dispatch(Item(n=1), checkpoint_value="00000001", external_id="e1")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            late.append(exc)

    t = threading.Thread(target=helper)
    t.start()
    t.join()
    assert len(late) == 1 and isinstance(late[0], SyncSessionClosed)
    assert "after the session ended" in str(late[0])
    holder["session"].flush()
    assert len(store.items_for_run(res.run_id)) == 1
    run = store.get_run(res.run_id)
    assert (run["status"], run["items_total"]) == ("success", 1)
    assert engine.reconcile(store, res.run_id).changed is False


# --- point 11 d-e -------------------------------------------------------------------------------
def test_low_water_mark_over_timestamps_of_mixed_precision(store):
    """``...00Z`` fails, ``...00.5Z`` succeeds: as text 00.5Z sorts first and the cursor passed the failure."""
    @listener(Item)
    def fail_first(event: Item) -> None:
        if event.n == 0:
            raise RuntimeError("boom")

    engine = engine_for(listeners=[fail_first], item_tries=1)
    integ = store.create_integration(provider_key="feed", name="f")
    feed("2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z", "2023-12-31T23:59:59.9Z")
    res = sync(engine, store, integ.id)
    assert res.status == "partial"
    assert res.cursor_after == "2023-12-31T23:59:59.9Z"  # strictly before the failure, in time
    [bad] = store.failed_items(integration_id=integ.id)
    skip_item(store, engine, bad["id"])
    assert store.get_integration(integ.id).cursor == "2024-01-01T00:00:00.5Z"  # the latest instant


def test_notification_listener_errors_are_logged_redacted(store, monkeypatch, caplog):
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    secret = "sekret-token-4242"

    @listener(SyncCompleted)
    def on_completed(event: SyncCompleted) -> None:
        raise RuntimeError(f"webhook refused token {secret}")

    @listener(SyncItemFailed)
    def on_failed(event: SyncItemFailed) -> None:
        raise RuntimeError(f"pager refused token {secret}")

    @listener(Item)
    def fail_one(event: Item) -> None:
        if event.n == 1:
            raise RuntimeError("boom")

    engine = engine_for(listeners=[on_completed, on_failed, fail_one], item_tries=1)
    integ = store.create_integration(provider_key="feed", name="f", credentials={"token": secret})
    feed("00000000", "00000001")
    log = logging.getLogger("test-redaction")
    with caplog.at_level(logging.WARNING, logger="test-redaction"):
        start = engine.start_run(store, integ.id, dagster_run_id=None)
        engine.enumerate(store, store.get_integration(integ.id), start.run_id, log=log)
        engine.process_chunk(store, start.run_id, 0, log=log)
        engine.reconcile(store, start.run_id, log=log)
        [bad] = store.failed_items(integration_id=integ.id)
        skip_item(store, engine, bad["id"], log=log)
    raised = [r.getMessage() for r in caplog.records if "raised" in r.getMessage()]
    assert any("on_failed" in m for m in raised) and any("on_completed" in m for m in raised), raised
    assert all(secret not in m and "***" in m for m in raised), raised


@pytest.mark.parametrize("checkpoints, shortcut", [
    (["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"], True),  # one shape: text order is time order
    (["00000001", "00000002", "abc"], True),  # plain strings
    (["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z"], False),  # mixed precision: Python orders them
    (["2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00-01:00"], False),  # offsets
    (["2024-01-01T00:00:00.1Z", "2024-01-01T00:00:00.!Z"], False),  # not a timestamp after all
    (["2024-01-01T00:00:00Z", "00000001"], False),  # timestamps among other strings
])
def test_postgresql_maximum_shortcut_only_when_text_order_is_checkpoint_order(pg_store, checkpoints, shortcut):
    store = pg_store
    engine = engine_for()
    integ = store.create_integration(provider_key="feed", name="f")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status="success", attempts=1, deferrals=0,
                 external_id=str(i), checkpoint=cp, event_type="x:Y", payload={}, created_at=engine.clock())
            for i, cp in enumerate(checkpoints)
        ])
    with store.begin() as conn:
        found, top = max_string_checkpoint(conn, start.run_id, None)
        assert found is shortcut
        if found:
            assert top == max(checkpoints)
        got = engine.next_cursor(conn, engine.provider("feed"), start.run_id, has_failures=False)
    from integrations_dagster.engine.cursor import reduce_by_max

    assert got == reduce_by_max(checkpoints)


def test_cli_advance_cursor_sets_a_cursor_and_refuses_bad_values(store, db_url, monkeypatch):
    from click.testing import CliRunner

    from integrations_dagster.cli import cli

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    integ = store.create_integration(provider_key="synthetic", name="s")
    store.update_integration(integ.id, cursor=7)
    env = {"INTEGRATIONS_DATABASE_URL": db_url, "INTEGRATIONS_DEFINITIONS": "tests.support.cli_app:defs",
           "DAGSTER_DISABLE_TELEMETRY": "yes"}

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    ok = invoke("advance-cursor", str(integ.id), "--set-cursor", '"2024-05-01T00:00:00Z"', "--json")
    assert ok.exit_code == 0, ok.output
    assert __import__("json").loads(ok.stdout)["cursor_after"] == "2024-05-01T00:00:00Z"
    bad = invoke("advance-cursor", str(integ.id), "--set-cursor", "2024-05-01")
    assert bad.exit_code == 2 and "not JSON" in bad.output and "quote a string" in bad.output
    nan = invoke("advance-cursor", str(integ.id), "--set-cursor", "NaN")
    assert nan.exit_code == 1 and "cannot be stored" in nan.output and "Traceback" not in nan.output
    assert store.get_integration(integ.id).cursor == "2024-05-01T00:00:00Z"


def test_helper_threads_may_dispatch_while_the_enumeration_runs(store):
    class Threaded(Provider):
        key = "feed"

        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            def work(start: int) -> None:
                for i in range(start, start + 50):
                    session.dispatch(Item(n=i), checkpoint_value=f"{i:08d}", external_id=f"e{i}")

            threads = [threading.Thread(target=work, args=(k * 50,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    engine = engine_for(Threaded(), flush_every=16, chunk_size=64)
    integ = store.create_integration(provider_key="feed", name="f")
    res = sync(engine, store, integ.id)
    assert (res.status, res.items_total) == ("success", 200)
    assert sorted(SEEN) == list(range(200)) and res.cursor_after == f"{199:08d}"
