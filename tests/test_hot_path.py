"""The throughput machinery keeps the per-item guarantees: staged (set-based) listeners, the chunk
claim, background writes of dispatched items and outcomes, batch sizes, the SQL cursor reduction."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import text

from integrations_dagster import (
    Provider,
    StagedBatch,
    Store,
    SyncItemEvent,
    SyncSettings,
    listener,
)
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.authoring.listeners import ListenerRegistry


class Noted(SyncItemEvent):
    integration_id: int
    key: str
    value: str


NOTES: list[list[str]] = []  # item keys per staged call, in call order


@listener(Noted, staged=True)
def write_notes(batch: StagedBatch) -> None:
    """Copies the batch into a scratch table with set-based SQL; a value 'boom' fails the statement."""
    NOTES.append([e.key for e in batch.events()])
    if batch.dialect == "postgresql":
        batch.execute(
            "INSERT INTO scratch_notes (k, v) SELECT s.event->>'key', "
            "CASE WHEN s.event->>'value' = 'boom' THEN (s.event->>'value')::int::text "
            "ELSE s.event->>'value' END FROM {staged} AS s"
        )
    else:
        batch.execute(
            "INSERT INTO scratch_notes (k, v) SELECT json_extract(s.event, '$.key'), "
            "CASE WHEN json_extract(s.event, '$.value') = 'boom' THEN abs(-9223372036854775808) "
            "ELSE json_extract(s.event, '$.value') END FROM {staged} AS s"
        )


class Notes(Provider):
    key = "notes"

    def __init__(self, values: list[str]) -> None:
        self.values = values

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for i, v in enumerate(self.values):
            session.dispatch(Noted(integration_id=integration.id, key=f"k{i:03d}", value=v),
                             checkpoint_value=f"{i:05d}", external_id=f"k{i:03d}")


def _engine(values: list[str], listeners: list[Any], **settings: Any) -> SyncEngine:
    return SyncEngine(providers=[Notes(values)], listeners=ListenerRegistry.build(listeners),
                      settings=SyncSettings(item_tries=1, **settings))


def _run(engine: SyncEngine, store: Store) -> tuple[int, Any]:
    integ = store.create_integration(provider_key="notes", name="n")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    assert start.run_id is not None
    result = engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    chunks = [engine.process_chunk(store, start.run_id, c) for c in range(result.chunks)]
    engine.reconcile(store, start.run_id)
    return start.run_id, chunks


@pytest.fixture
def scratch(store: Store):  # type: ignore[no-untyped-def]
    with store.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS scratch_notes"))
        conn.execute(text("CREATE TABLE scratch_notes (k TEXT PRIMARY KEY, v TEXT NOT NULL)"))
    NOTES.clear()
    yield
    with store.begin() as conn:
        conn.execute(text("DROP TABLE scratch_notes"))


def _notes(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT k, v FROM scratch_notes")).all())


def test_staged_listener_moves_each_batch_with_sql(store, db_url, scratch):
    # The chunk step's staged path (applied at write, PostgreSQL runs them at enumeration: test_apply_at_write.py).
    engine = _engine([f"v{i}" for i in range(25)], [write_notes], listener_batch_size=10, chunk_size=20,
                     apply_at_write=False)
    run_id, _ = _run(engine, store)
    assert _notes(store) == {f"k{i:03d}": f"v{i}" for i in range(25)}
    assert [len(call) for call in NOTES] == [10, 10, 5]  # batches of listener_batch_size within each chunk
    assert store.get_run(run_id)["status"] == "success"
    assert store.get_integration(store.get_run(run_id)["integration_id"]).cursor == "00024"


def test_a_failing_staged_batch_rolls_back_and_is_isolated_item_by_item(store, db_url, scratch):
    values = [f"v{i}" for i in range(8)]
    values[5] = "boom"
    engine = _engine(values, [write_notes], listener_batch_size=8, apply_at_write=False)  # the chunk step's path
    run_id, [chunk] = _run(engine, store)
    # the batch statement failed as a whole (rolled back), then each item ran alone: only k005 fails
    assert _notes(store) == {f"k{i:03d}": f"v{i}" for i in range(8) if i != 5}
    assert NOTES[0] == [f"k{i:03d}" for i in range(8)] and all(len(c) == 1 for c in NOTES[1:])
    assert (chunk.succeeded, chunk.failed) == (7, 1)
    [failed] = store.failed_items()
    assert failed["external_id"] == "k005" and failed["status"] == "failed"
    run = store.get_run(run_id)
    assert (run["status"], run["success_count"], run["failed_count"]) == ("partial", 7, 1)
    assert store.get_integration(run["integration_id"]).cursor == "00004"  # held before the failed item


def test_batch_listeners_get_batches_of_listener_batch_size(store, db_url):
    sizes: list[int] = []

    @listener(Noted, batch=True)
    def batches(events: list[Noted]) -> None:
        sizes.append(len(events))

    engine = _engine([f"v{i}" for i in range(23)], [batches], listener_batch_size=7, chunk_size=100)
    _run(engine, store)
    assert sizes == [7, 7, 7, 2]


def test_items_of_a_running_chunk_are_not_written_twice_per_item(store, db_url):
    """PostgreSQL claims a chunk with an advisory lock (items stay pending while they run);
    SQLite marks them processing. Either way every item ends success with one attempt."""
    seen: list[str] = []

    @listener(Noted)
    def look(event: Noted) -> None:
        with store.engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM sync_items WHERE external_id = :k"),
                                  {"k": event.key}).scalar_one()
        seen.append(status)

    engine = _engine(["a", "b", "c"], [look])
    run_id, _ = _run(engine, store)
    assert seen == (["processing"] * 3 if store.is_sqlite else ["pending"] * 3)
    items = store.items_for_run(run_id)
    assert [(i["status"], i["attempts"]) for i in items] == [("success", 1)] * 3


def test_a_chunk_held_by_another_worker_is_left_to_it(pg_store):
    store = pg_store
    calls: list[str] = []

    @listener(Noted)
    def count(event: Noted) -> None:
        calls.append(event.key)

    engine = _engine(["a", "b"], [count])
    integ = store.create_integration(provider_key="notes", name="n")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    with store.engine.connect() as other:  # another worker holds chunk 0
        assert other.execute(text("SELECT pg_try_advisory_lock(:r, 0)"), {"r": start.run_id}).scalar()
        held = engine.process_chunk(store, start.run_id, 0)
        assert (held.succeeded, held.failed, calls) == (0, 0, [])
        other.execute(text("SELECT pg_advisory_unlock(:r, 0)"), {"r": start.run_id})
        other.commit()
    done = engine.process_chunk(store, start.run_id, 0)
    assert (done.succeeded, calls) == (2, ["k000", "k001"])


def test_a_failed_background_write_fails_the_enumeration_and_leaves_nothing(pg_store, caplog):
    """Dispatched items are written on a worker thread on PostgreSQL: a write error still
    reaches the provider's run, which fails with the database's message and keeps no items."""
    store = pg_store
    values = ["ok"] * 30
    engine = _engine(values, [], flush_every=10)

    # An event type whose name is longer than its column: dispatch cannot see it, the database refuses it
    # (an over-long external id no longer gets that far: dispatch records it as an invalid item).
    long_named = type("N" * 400, (Noted,), {})

    class TooLong(Notes):
        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            for i in range(30):  # the third batch carries an event type name longer than the column
                cls = long_named if i == 25 else Noted
                session.dispatch(cls(integration_id=integration.id, key=f"k{i}", value="v"),
                                 checkpoint_value=f"{i:05d}", external_id=f"k{i}")

    engine.providers["notes"] = TooLong(values)
    integ = store.create_integration(provider_key="notes", name="n")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with pytest.raises(Exception, match="too long"):
        engine.enumerate(store, store.get_integration(integ.id), start.run_id, log=logging.getLogger("t"))
    run = store.get_run(start.run_id)
    assert run["status"] == "failed" and "too long" in run["error"]
    assert store.items_for_run(start.run_id) == []
    assert store.get_integration(integ.id).cursor is None


@pytest.mark.parametrize(
    "checkpoints, low_water",
    [
        (["abc", "abc!", "abc d", "abd", "é", "z", "Z", "2024-01-02T00:00:00Z"], None),
        (["2024-01-0%dT00:00:00Z" % d for d in range(1, 10)], "2024-01-05T00:00:00Z"),
        ([3, 20, 100], None),  # numbers: Python reduces them (numeric order, not text order)
        (["a", 7], None),  # mixed types never reach the SQL shortcut
    ],
)
def test_cursor_reduction_matches_python_max(store, db_url, checkpoints, low_water):
    from providers.synthetic import SyntheticProvider

    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]), settings=SyncSettings())
    integ = store.create_integration(provider_key="synthetic", name="s")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status="success", attempts=1, deferrals=0,
                 external_id=str(i), checkpoint=cp, event_type="x:Y", payload={}, created_at=engine.clock())
            for i, cp in enumerate(checkpoints)
        ])
    expected_values = [c for c in checkpoints if low_water is None or c < low_water]
    try:
        expected = max(expected_values)
    except TypeError:  # mixed types: the item of the other kind fails and holds the cursor (no raise)
        with store.begin() as conn:
            assert engine.next_cursor(conn, engine.provider("synthetic"), start.run_id, has_failures=False) is None
        return
    if low_water is not None:
        with store.begin() as conn:
            store.insert_items(conn, [dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status="failed",
                                           attempts=1, deferrals=0, external_id="f", checkpoint=low_water,
                                           event_type="x:Y", payload={}, created_at=engine.clock())])
    with store.begin() as conn:
        got = engine.next_cursor(conn, engine.provider("synthetic"), start.run_id, has_failures=low_water is not None)
    assert got == expected


def test_staged_batch_exposes_its_items(store, db_url):
    engine = _engine(["a", "b"], [])
    integ = store.create_integration(provider_key="notes", name="n")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    ids = [i["id"] for i in store.items_for_run(start.run_id)]
    with store.begin() as conn:
        batch = StagedBatch(conn, ids, Noted)
        assert len(batch) == 2 and batch.dialect == conn.dialect.name
        assert [e.value for e in batch.events()] == ["a", "b"]
        rows = batch.execute("SELECT s.item_id FROM {staged} AS s ORDER BY s.item_id").scalars().all()
        assert rows == ids
