"""Operator actions (``integrations_dagster.operations.actions``) on SQLite and PostgreSQL, without Dagster runs.

Runs are driven through the engine directly (start, enumerate, process every chunk, reconcile), which
is exactly what the Dagster ops do, so these tests stay fast.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from integrations_dagster import IntegrationNotFound, IntegrationsError, SyncItemNotFound, SyncSettings, UnknownProvider
from integrations_dagster.operations import actions as ops
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.errors import CredentialsError
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.security.secrets import CredentialCipher, generate_key
from integrations_dagster.store import models as m
from integrations_dagster.store import utcnow
from providers.synthetic import SyntheticItem, SyntheticProvider, checkpoint_for

POISON: set[str] = set()


def record(event_: SyntheticItem) -> None:
    if event_.external_id in POISON:
        raise ValueError(f"poisoned item {event_.external_id}")


@pytest.fixture(autouse=True)
def _clear_poison():  # type: ignore[no-untyped-def]
    POISON.clear()
    yield
    POISON.clear()


@pytest.fixture
def engine() -> SyncEngine:
    return SyncEngine(
        providers=[SyntheticProvider()],
        listeners=ListenerRegistry.build([(SyntheticItem, record)]),
        settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=2, chunk_size=10,
                              inline_wait_max=5.0, job_timeout=60),
    )


@pytest.fixture
def keyed(store):  # type: ignore[no-untyped-def]
    """The store encrypts with a fresh key for this test (the cached store is restored after)."""
    old = store.cipher
    key = generate_key()
    store.cipher = CredentialCipher(key)
    yield key
    store.cipher = old


def run_sync(store, engine, integration_id: int):  # type: ignore[no-untyped-def]
    start = engine.start_run(store, integration_id, dagster_run_id=None)
    assert start.run_id is not None
    result = engine.enumerate(store, store.get_integration(integration_id), start.run_id)
    for chunk in range(result.chunks):
        engine.process_chunk(store, start.run_id, chunk)
    return engine.reconcile(store, start.run_id)


def make(store, engine, items: int = 30, tenant: str = "default", name: str = "s"):  # type: ignore[no-untyped-def]
    return ops.add_integration(store, engine=engine, provider_key="synthetic", name=name,
                               metadata={"items": items}, tenant=tenant)


def failed_by_ext(store, integration_id: int) -> dict[str, dict]:
    return {i["external_id"]: i for i in ops.list_failed_items(store, integration_id=integration_id)}


# --- add / list / show / enable / disable / remove ---------------------------------------------------
def test_add_validates_and_defaults(store, engine):
    integ = make(store, engine)
    assert (integ.tenant, integ.provider_key, integ.enabled, integ.health) == ("default", "synthetic", True, "healthy")
    with pytest.raises(UnknownProvider, match="unknown provider 'nope'; known providers: synthetic"):
        ops.add_integration(store, engine=engine, provider_key="nope", name="x")
    with pytest.raises(IntegrationsError, match="either an interval or a cron"):
        ops.add_integration(store, engine=engine, provider_key="synthetic", name="x", interval_minutes=5,
                            cron="*/5 * * * *")
    with pytest.raises(IntegrationsError, match="invalid cron expression"):
        ops.add_integration(store, engine=engine, provider_key="synthetic", name="x", cron="every day")
    with pytest.raises(IntegrationsError, match="at least 1 minute"):
        ops.add_integration(store, engine=engine, provider_key="synthetic", name="x", interval_minutes=0)
    with pytest.raises(IntegrationsError, match="non-empty name"):
        ops.add_integration(store, engine=engine, provider_key="synthetic", name="  ")
    cron = ops.add_integration(store, engine=engine, provider_key="synthetic", name="c", cron="*/15 * * * *",
                               tenant="acme")
    assert (cron.sync_cron, cron.tenant) == ("*/15 * * * *", "acme")
    assert [r["id"] for r in ops.list_integrations(store)] == [integ.id, cron.id]  # nothing invalid was stored


def test_credentials_are_encrypted_and_never_listed_or_shown(store, engine, keyed):
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="gh",
                                credentials={"token": "ghp_SECRET_VALUE_123"})
    with store.engine.connect() as conn:
        raw = conn.execute(select(m.integrations.c.credentials).where(m.integrations.c.id == integ.id)).scalar()
    assert raw.startswith("fernet:") and "ghp_SECRET_VALUE_123" not in raw
    listed = ops.list_integrations(store)
    shown = ops.show_integration(store, integ.id)
    assert listed[0]["has_credentials"] is True and shown["has_credentials"] is True
    assert "ghp_SECRET_VALUE_123" not in ops.dumps(listed) + ops.dumps(shown) + repr(integ) + str(integ)
    assert store.get_integration(integ.id).credentials == {"token": "ghp_SECRET_VALUE_123"}


def test_storing_credentials_without_a_key_is_refused(store, engine, monkeypatch):
    monkeypatch.delenv("INTEGRATIONS_SECRET_KEY", raising=False)
    monkeypatch.delenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", raising=False)
    old = store.cipher
    store.cipher = CredentialCipher()
    try:
        with pytest.raises(CredentialsError, match="refusing to store credentials unencrypted"):
            ops.add_integration(store, engine=engine, provider_key="synthetic", name="x",
                                credentials={"token": "t0ken-value"})
        assert ops.list_integrations(store) == []
    finally:
        store.cipher = old


def test_show_keys_and_recent_runs(store, engine):
    integ = make(store, engine, items=3)
    run_sync(store, engine, integ.id)
    data = ops.show_integration(store, integ.id)
    assert set(data) == {
        "id", "tenant", "provider", "name", "metadata", "has_credentials", "enabled", "health", "disabled_reason",
        "interval_minutes", "cron", "cursor", "consecutive_failures", "last_synced_at", "next_sync_at",
        "last_run_status", "created_at", "updated_at", "recent_runs",
    }
    assert data["cursor"] == checkpoint_for(2) and data["last_run_status"] == "success"
    assert data["recent_runs"][0]["status"] == "success" and data["recent_runs"][0]["items"] == 3


def test_disable_then_enable(store, engine):
    integ = make(store, engine)
    off = ops.disable_integration(store, integ.id, reason="API contract ended")
    assert (off.enabled, off.health, off.next_sync_at, off.disabled_reason) == (
        False, "disabled", None, "API contract ended")
    store.update_integration(integ.id, consecutive_auth_failures=10, consecutive_failures=10)
    on = ops.enable_integration(store, integ.id)
    assert (on.enabled, on.health, on.disabled_reason, on.consecutive_auth_failures) == (True, "healthy", None, 0)
    assert on.next_sync_at is not None and on.next_sync_at <= utcnow()


def test_remove_deletes_runs_and_items(store, engine):
    integ = make(store, engine, items=5)
    keep = make(store, engine, items=2)
    run_sync(store, engine, integ.id)
    run_sync(store, engine, keep.id)
    ops.remove_integration(store, integ.id)
    with pytest.raises(IntegrationNotFound):
        ops.show_integration(store, integ.id)
    with store.engine.connect() as conn:
        assert conn.execute(select(m.sync_items.c.integration_id).distinct()).scalars().all() == [keep.id]
        assert conn.execute(select(m.sync_runs.c.integration_id).distinct()).scalars().all() == [keep.id]
    with pytest.raises(IntegrationNotFound, match=f"integration {integ.id} not found"):
        ops.remove_integration(store, integ.id)


# --- status -----------------------------------------------------------------------------------------------
def test_status_rows_counts_in_one_query(store, engine):
    a = make(store, engine, items=30, name="a")
    b = make(store, engine, items=5, name="b")
    c = make(store, engine, items=5, name="c")  # never synced
    POISON.update({"item-12", "item-20"})
    run_sync(store, engine, a.id)
    run_sync(store, engine, b.id)
    # b has a new run in flight with pending items
    start = engine.start_run(store, b.id, dagster_run_id=None)
    store.update_integration(b.id, metadata={"items": 8})
    engine.enumerate(store, store.get_integration(b.id), start.run_id)

    statements: list[str] = []

    def count(*args):  # type: ignore[no-untyped-def]
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        rows = ops.status_rows(store)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    by_id = {r["id"]: r for r in rows}
    assert set(by_id[a.id]) == {"id", "tenant", "provider", "name", "enabled", "health", "cursor", "last_synced_at",
                                "next_sync_at", "last_run_id", "last_run_status", "last_dagster_run_id",
                                "pending_items", "failed_items", "superseded_items", "outbox_pending",
                                "outbox_failed", "outbox_conflict"}
    assert (by_id[a.id]["failed_items"], by_id[a.id]["pending_items"], by_id[a.id]["last_run_status"],
            by_id[a.id]["health"], by_id[a.id]["cursor"]) == (2, 0, "partial", "degraded", checkpoint_for(11))
    assert (by_id[b.id]["pending_items"], by_id[b.id]["failed_items"], by_id[b.id]["last_run_status"]) == (
        3, 0, "processing")
    assert (by_id[c.id]["last_run_status"], by_id[c.id]["pending_items"], by_id[c.id]["last_synced_at"]) == (
        None, 0, None)
    assert [r["id"] for r in ops.status_rows(store, integration_id=b.id)] == [b.id]
    with pytest.raises(IntegrationNotFound, match="integration 999 not found"):
        ops.status_rows(store, integration_id=999)


# --- recovering failed items ------------------------------------------------------------------------------
def test_skip_item_moves_cursor_to_the_next_failure(store, engine):
    integ = make(store, engine)
    POISON.update({"item-12", "item-20"})
    first = run_sync(store, engine, integ.id)
    assert (first.status, first.cursor_after) == ("partial", checkpoint_for(11))
    failed = failed_by_ext(store, integ.id)
    assert set(failed) == {"item-12", "item-20"}
    assert failed["item-12"]["attempts"] == 2 and "poisoned item item-12" in failed["item-12"]["last_error"]
    assert failed["item-12"]["failed_at"] is not None and failed["item-12"]["sync_run_id"] == first.run_id

    res = ops.skip_item(store, engine, failed["item-12"]["id"], reason="upstream record is corrupt")
    assert (res.item_status, res.run_status, res.cursor_before, res.cursor_after) == (
        "skipped", "partial", checkpoint_for(11), checkpoint_for(19))
    item = store.get_item(failed["item-12"]["id"])
    assert (item["status"], item["skip_reason"]) == ("skipped", "upstream record is corrupt")
    assert set(failed_by_ext(store, integ.id)) == {"item-20"}

    again = ops.skip_item(store, engine, failed["item-12"]["id"])  # idempotent
    assert (again.changed, again.skip_reason) == (False, "upstream record is corrupt")

    last = ops.skip_item(store, engine, failed["item-20"]["id"])
    assert (last.run_status, last.cursor_after, last.skip_reason) == ("success", checkpoint_for(29),
                                                                      ops.DEFAULT_SKIP_REASON)


def test_skip_refuses_items_that_are_not_failed(store, engine):
    integ = make(store, engine, items=3)
    run_sync(store, engine, integ.id)
    ok = store.items_for_run(store.runs_for_integration(integ.id)[0]["id"])[0]
    with pytest.raises(IntegrationsError, match=f"sync item {ok['id']} is success, not failed"):
        ops.skip_item(store, engine, ok["id"])
    with pytest.raises(SyncItemNotFound, match="sync item 424242 not found"):
        ops.skip_item(store, engine, 424242)


def test_retry_item_after_fix_advances_cursor_and_failure_again_keeps_it(store, engine):
    integ = make(store, engine)
    POISON.update({"item-12"})
    run_sync(store, engine, integ.id)
    item_id = failed_by_ext(store, integ.id)["item-12"]["id"]

    still = ops.retry_item(store, engine, item_id)  # not fixed yet: one attempt, fails again
    assert (still.item_status, still.attempts, still.cursor_after) == ("failed", 1, checkpoint_for(11))
    assert "poisoned item item-12" in (still.last_error or "")
    assert store.get_item(item_id)["status"] == "failed"

    POISON.clear()
    res = ops.retry_item(store, engine, item_id)
    assert (res.item_status, res.run_status, res.cursor_before, res.cursor_after) == (
        "success", "success", checkpoint_for(11), checkpoint_for(29))
    assert store.get_integration(integ.id).health == "healthy"
    with pytest.raises(IntegrationsError, match=f"sync item {item_id} is success, not failed"):
        ops.retry_item(store, engine, item_id)


def test_retry_failed_items_of_an_integration(store, engine):
    integ = make(store, engine)
    POISON.update({"item-3", "item-12", "item-25"})
    run_sync(store, engine, integ.id)
    POISON.discard("item-3")
    POISON.discard("item-12")
    res = ops.retry_failed_items(store, engine, integ.id)
    assert (res.retried, res.succeeded, res.still_failed) == (3, 2, 1)
    assert (res.cursor_before, res.cursor_after) == (checkpoint_for(2), checkpoint_for(24))
    assert set(failed_by_ext(store, integ.id)) == {"item-25"}


# --- advance cursor ---------------------------------------------------------------------------------------
def _started_run_with_items(store, engine, integration_id: int) -> int:  # type: ignore[no-untyped-def]
    start = engine.start_run(store, integration_id, dagster_run_id="dead-run")
    engine.enumerate(store, store.get_integration(integration_id), start.run_id)
    return start.run_id


def test_advance_cursor_reclaims_items_stuck_in_processing(store, engine):
    integ = make(store, engine, items=20)
    run_id = _started_run_with_items(store, engine, integ.id)
    engine.process_chunk(store, run_id, 0)  # items 0-9 succeed
    # chunk 1 was claimed by a worker that died: items 10-14 long ago, 15-19 just now
    old = utcnow() - timedelta(seconds=engine.settings.job_timeout + 5)
    t = m.sync_items
    with store.begin() as conn:
        conn.execute(update(t).where(t.c.run_id == run_id, t.c.chunk == 1).values(status="processing",
                                                                                   claimed_at=utcnow()))
        conn.execute(update(t).where(t.c.run_id == run_id, t.c.external_id.in_([f"item-{i}" for i in range(10, 15)]))
                     .values(claimed_at=old))
    res = ops.advance_cursor(store, engine, integ.id)
    assert len(res.reclaimed_items) == 5 and res.abandoned_items == []
    items = {i["external_id"]: i for i in store.items_for_run(run_id)}
    assert items["item-10"]["status"] == "failed" and "abandoned" in items["item-10"]["last_error"]
    assert "job timeout" in items["item-10"]["last_error"]
    assert items["item-15"]["status"] == "processing"  # a live claim is left alone
    assert res.runs[0]["final"] is False and res.cursor_after is None  # the run still has unfinished items

    # the fresh claim ages past the timeout too: now the run can settle at the low-water mark
    with store.begin() as conn:
        conn.execute(update(t).where(t.c.run_id == run_id, t.c.status == "processing").values(claimed_at=old))
    res = ops.advance_cursor(store, engine, integ.id)
    assert len(res.reclaimed_items) == 5
    assert res.runs == [{"sync_run_id": run_id, "status": "partial", "final": True, "changed": True,
                         "cursor_after": checkpoint_for(9)}]
    assert store.get_integration(integ.id).cursor == checkpoint_for(9)
    assert len(ops.list_failed_items(store, integration_id=integ.id)) == 10


def test_advance_cursor_fails_pending_items_of_a_dead_dagster_run(store, engine):
    integ = make(store, engine, items=20)
    run_id = _started_run_with_items(store, engine, integ.id)
    engine.process_chunk(store, run_id, 0)
    seen: list[str | None] = []

    def alive(dagster_run_id):  # type: ignore[no-untyped-def]
        seen.append(dagster_run_id)
        return False

    res = ops.advance_cursor(store, engine, integ.id, is_run_alive=alive)
    assert seen == ["dead-run"] and len(res.abandoned_items) == 10
    assert res.cursor_after == checkpoint_for(9)
    assert {i["status"] for i in store.items_for_run(run_id) if i["chunk"] == 1} == {"failed"}


def test_advance_cursor_after_skip_settles_partial_runs(store, engine):
    integ = make(store, engine)
    POISON.add("item-12")
    run_sync(store, engine, integ.id)
    item = failed_by_ext(store, integ.id)["item-12"]
    # a skip written without reconciling (e.g. by an older tool): advance-cursor catches the cursor up
    with store.begin() as conn:
        conn.execute(update(m.sync_items).where(m.sync_items.c.id == item["id"]).values(status="skipped"))
    res = ops.advance_cursor(store, engine, integ.id)
    assert (res.cursor_before, res.cursor_after) == (checkpoint_for(11), checkpoint_for(29))
    assert res.runs[0]["status"] == "success"


# --- prune ------------------------------------------------------------------------------------------------
def _add_requests(store, integration_id: int, run_id: int | None, ages_days: list[float]) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with store.begin() as conn:
        conn.execute(m.requests_log.insert(), [
            dict(integration_id=integration_id, sync_run_id=run_id, method="GET", url=f"https://api.test/{i}",
                 status_code=200, duration_ms=1.5, bytes=10, attempt=1, created_at=now - timedelta(days=d))
            for i, d in enumerate(ages_days)
        ])


def test_prune_keeps_failed_rows_and_recent_rows(store, engine):
    integ = make(store, engine, items=10)
    other = make(store, engine, items=4, tenant="acme")
    POISON.update({"item-3", "item-7"})
    run = run_sync(store, engine, integ.id)
    ops.skip_item(store, engine, failed_by_ext(store, integ.id)["item-7"]["id"])
    run_sync(store, engine, other.id)
    _add_requests(store, integ.id, run.run_id, [40, 31, 5])
    old = utcnow() - timedelta(days=45)
    with store.begin() as conn:  # everything of the first integration finished 45 days ago
        conn.execute(update(m.sync_items).where(m.sync_items.c.integration_id == integ.id).values(finished_at=old))

    lines: list[str] = []
    res = ops.prune(store, progress=lines.append)
    assert (res.days, res.sync_items_deleted, res.requests_deleted) == (30, 9, 2)  # 8 success + 1 skipped
    assert lines and lines[-1] == "request log rows deleted: 2"
    left = store.items_for_run(run.run_id)
    assert [(i["external_id"], i["status"]) for i in left] == [("item-3", "failed")]
    assert len(store.items_for_run(store.runs_for_integration(other.id)[0]["id"])) == 4  # recent: kept
    assert ops.prune(store).sync_items_deleted == 0
    with pytest.raises(IntegrationsError, match="0 or more"):
        ops.prune(store, days=-1)


def test_prune_in_batches_and_scoped_to_a_tenant(store, engine):
    mine = make(store, engine, items=12, tenant="acme")
    theirs = make(store, engine, items=12, tenant="globex")
    run_sync(store, engine, mine.id)
    run_sync(store, engine, theirs.id)
    _add_requests(store, mine.id, None, [1])
    _add_requests(store, theirs.id, None, [1])
    res = ops.prune(store, days=0, tenant="acme", batch_size=5, now=utcnow() + timedelta(seconds=1))
    assert (res.sync_items_deleted, res.requests_deleted) == (12, 1)
    with store.engine.connect() as conn:
        assert conn.execute(select(m.sync_items.c.integration_id).distinct()).scalars().all() == [theirs.id]
        assert conn.execute(select(m.requests_log.c.integration_id)).scalars().all() == [theirs.id]


# --- timeline ---------------------------------------------------------------------------------------------
def test_timeline_lists_runs_newest_first_with_their_requests(store, engine):
    integ = make(store, engine, items=3)
    r1 = run_sync(store, engine, integ.id)
    store.update_integration(integ.id, metadata={"items": 5})
    r2 = run_sync(store, engine, integ.id)
    _add_requests(store, integ.id, r1.run_id, [0, 0])
    _add_requests(store, integ.id, r2.run_id, [0])
    _add_requests(store, integ.id, None, [0])  # not part of a run
    runs = ops.timeline(store, integ.id)
    assert [r["id"] for r in runs] == [r2.run_id, r1.run_id]
    assert [len(r["request_log"]) for r in runs] == [1, 2]
    assert set(runs[0]) == {"id", "dagster_run_id", "status", "trigger", "started_at", "finished_at", "items",
                            "succeeded", "failed", "skipped", "superseded", "requests", "cursor_before", "cursor_after", "error",
                            "request_log", "direction", "push"}
    assert set(runs[0]["request_log"][0]) == {"id", "method", "url", "status_code", "duration_ms", "bytes", "attempt",
                                              "error", "created_at"}
    assert (runs[0]["cursor_before"], runs[0]["cursor_after"], runs[0]["items"]) == (
        checkpoint_for(2), checkpoint_for(4), 2)
    assert [r["id"] for r in ops.timeline(store, integ.id, limit=1)] == [r2.run_id]


# --- key rotation -----------------------------------------------------------------------------------------
def test_rotate_credentials_re_encrypts_with_the_new_key(store, engine, keyed):
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="gh",
                                credentials={"token": "tok-1234"})
    make(store, engine)  # no credentials: untouched
    new = generate_key()
    with pytest.raises(CredentialsError, match="nothing was changed"):
        ops.rotate_credentials(store, cipher=CredentialCipher(new))  # old key missing
    assert store.get_integration(integ.id).credentials == {"token": "tok-1234"}
    res = ops.rotate_credentials(store, cipher=CredentialCipher(f"{new},{keyed}"))
    assert (res.rotated, res.total) == (1, 1)
    store.cipher = CredentialCipher(new)  # the old key can now be dropped
    assert store.get_integration(integ.id).credentials == {"token": "tok-1234"}
    with pytest.raises(CredentialsError, match="must be set"):
        ops.rotate_credentials(store, cipher=CredentialCipher(""))


def test_rotate_turns_plaintext_rows_into_encrypted_ones(store, engine):
    old = store.cipher
    store.cipher = CredentialCipher("", allow_plaintext=True)
    try:
        integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="demo",
                                    credentials={"token": "plain-tok"})
        key = generate_key()
        assert ops.rotate_credentials(store, cipher=CredentialCipher(key)).rotated == 1
        with store.engine.connect() as conn:
            raw = conn.execute(select(m.integrations.c.credentials).where(m.integrations.c.id == integ.id)).scalar()
        assert raw.startswith("fernet:") and "plain-tok" not in raw
    finally:
        store.cipher = old


# --- tenants ----------------------------------------------------------------------------------------------
def test_every_action_treats_another_tenants_ids_as_not_found(store, engine):
    integ = make(store, engine, tenant="acme")
    POISON.add("item-2")
    run_sync(store, engine, integ.id)
    item_id = failed_by_ext(store, integ.id)["item-2"]["id"]
    missing_integration = f"integration {integ.id} not found"
    missing_item = f"sync item {item_id} not found"
    cases = [
        (lambda: ops.show_integration(store, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.enable_integration(store, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.disable_integration(store, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.remove_integration(store, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.status_rows(store, integration_id=integ.id, tenant="globex"), missing_integration),
        (lambda: ops.list_failed_items(store, integration_id=integ.id, tenant="globex"), missing_integration),
        (lambda: ops.advance_cursor(store, engine, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.retry_failed_items(store, engine, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.timeline(store, integ.id, tenant="globex"), missing_integration),
        (lambda: ops.skip_item(store, engine, item_id, tenant="globex"), missing_item),
        (lambda: ops.retry_item(store, engine, item_id, tenant="globex"), missing_item),
    ]
    for call, message in cases:
        with pytest.raises((IntegrationNotFound, SyncItemNotFound)) as info:
            call()
        assert str(info.value) == message
    # exactly the error of an id that does not exist at all
    with pytest.raises(IntegrationNotFound) as info:
        ops.show_integration(store, 987654, tenant="globex")
    assert str(info.value) == "integration 987654 not found"
    # nothing changed, and listings of the other tenant are empty
    assert ops.list_integrations(store, tenant="globex") == [] and ops.status_rows(store, tenant="globex") == []
    assert ops.list_failed_items(store, tenant="globex") == []
    assert store.get_item(item_id)["status"] == "failed" and store.get_integration(integ.id).enabled
    # and the owner can act
    assert ops.skip_item(store, engine, item_id, tenant="acme").item_status == "skipped"
    assert [r["id"] for r in ops.list_integrations(store, tenant="acme")] == [integ.id]
