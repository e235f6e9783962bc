"""Property tests of the cursor rule and of reconciliation as pure functions (``_cursor``).

Random runs: random checkpoints (numbers, plain strings, ISO-8601 timestamps of mixed precision
and time zones), duplicates, out-of-order dispatch, random outcomes and retries. Invariants: the
cursor is monotonic, never at or past the smallest unfinished checkpoint under the low-water rule,
never moves on failure under the strict rule, and reaches the maximum once everything finishes.
The last test checks that ``SyncEngine.reconcile`` on SQLite and PostgreSQL (whose maximum over
strings is computed by the database when it can) agrees with the pure function.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations_dagster.status import COMPLETED
from integrations_dagster.engine.cursor import (
    Counts,
    CursorPolicy,
    ItemCheckpoint,
    UnorderableCheckpoint,
    checkpoint_key,
    reduce_by_max,
    run_status,
    settle,
)

BASE = datetime(2024, 1, 1, tzinfo=UTC)


def iso(instant: datetime, style: int) -> str:
    """One instant in one of several ISO-8601 spellings (all name the same instant)."""
    if style == 0:
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ") if not instant.microsecond else \
            instant.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    if style == 1:
        return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if style == 2:
        return instant.astimezone(timezone(timedelta(hours=2))).isoformat()
    spec = "microseconds" if instant.microsecond % 1000 else "milliseconds"
    return instant.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat(timespec=spec)


# Instants on a coarse grid (so duplicates and same-second values are common), some with fractions.
instants = st.builds(
    lambda s, frac: BASE + timedelta(seconds=s, microseconds=frac),
    st.integers(0, 40), st.sampled_from([0, 0, 500_000, 250_000, 1]),
)
iso_checkpoints = st.builds(iso, instants, st.integers(0, 3))
number_checkpoints = st.one_of(st.integers(0, 50), st.sampled_from([0.5, 2.25, 10.0]))
plain_checkpoints = st.sampled_from([f"{i:04d}" for i in range(30)] + ["a", "b", "ab"])
# Strings that look like timestamps and are not quite (or are, in unusual spellings): PostgreSQL's
# shortcut must give up on them exactly when text order and checkpoint order could differ.
tricky_checkpoints = st.one_of(iso_checkpoints, st.sampled_from([
    "2024-01-01T00:00:00.!Z", "2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.4Z", "2024-13-01T00:00:00Z",
    "2024-01-01t00:00:00z", "2024-01-01T00:00Z", "2024-01-01 00:00:10Z", "2024-01-01T00:00:09", "2024-01-01",
    "2024-01-01T00:00:00,9Z", "2024-01-01T00:00:09+0100",
]))
kinds = st.sampled_from(["iso", "number", "plain", "tricky"])


def of_kind(kind: str) -> st.SearchStrategy:
    return {"iso": iso_checkpoints, "number": number_checkpoints, "plain": plain_checkpoints,
            "tricky": tricky_checkpoints}[kind]


def key(v):  # type: ignore[no-untyped-def]
    return checkpoint_key(v)


@st.composite
def runs(draw, *, kind=None, statuses=("success", "failed", "skipped", "superseded")):  # type: ignore[no-untyped-def]
    kind = kind or draw(kinds)
    cps = draw(st.lists(of_kind(kind), min_size=0, max_size=25))
    ids = draw(st.permutations(list(range(1, len(cps) + 1))))  # dispatch order is not checkpoint order
    items = [ItemCheckpoint(i, draw(st.sampled_from(statuses)), cp) for i, cp in zip(ids, cps)]
    old = draw(st.one_of(st.none(), of_kind(kind)))
    return kind, items, old


def counts_of(items: list[ItemCheckpoint]) -> Counts:
    n: dict[str, int] = {}
    for it in items:
        n[it.status] = n.get(it.status, 0) + 1
    return Counts.of(n)


def run(items, old, rule="low_water_mark", reduce=None):  # type: ignore[no-untyped-def]
    held = [it for it in items if it.status == "failed"]
    done = sorted((it for it in items if it.status in COMPLETED), key=lambda it: it.id)
    return settle(counts_of(items), held, done, old_cursor=old, policy=CursorPolicy(rule=rule, reduce=reduce))


@given(st.lists(instants, min_size=2, max_size=8), st.lists(st.integers(0, 3), min_size=8, max_size=8))
def test_iso_timestamps_order_by_instant_whatever_their_spelling(moments, styles):
    spelled = [iso(t, s) for t, s in zip(moments, styles)]
    for (a, sa), (b, sb) in zip(zip(moments, spelled), zip(moments[1:], spelled[1:])):
        if a < b:
            assert key(sa) < key(sb), (sa, sb)
        elif a > b:
            assert key(sa) > key(sb), (sa, sb)
    top = reduce_by_max(spelled)
    assert datetime.fromisoformat(top.replace("Z", "+00:00")) == max(moments)


def test_mixed_precision_is_ordered_by_instant():
    assert key("2024-01-01T00:00:00Z") < key("2024-01-01T00:00:00.5Z")
    assert reduce_by_max(["2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00Z"]) == "2024-01-01T00:00:00.5Z"
    assert key("2024-01-01T01:00:00+02:00") < key("2024-01-01T00:00:00Z")


@given(kinds.flatmap(lambda k: st.lists(st.lists(of_kind(k), max_size=6), min_size=1, max_size=5)))
def test_reduce_by_max_is_associative(pages):
    flat = [v for page in pages for v in page]
    paged = reduce_by_max([reduce_by_max(p) for p in pages])
    whole = reduce_by_max(flat)
    assert (paged is None and whole is None) or key(paged) == key(whole)


@given(runs())
def test_cursor_is_monotonic_and_never_passes_a_failure(data):
    _kind, items, old = data
    out = run(items, old)
    assert out.final and out.error is None and not out.invalid
    if old is not None:
        assert key(out.cursor) >= key(old)
    failed = [it.checkpoint for it in items if it.status == "failed"]
    if failed and out.cursor != old:
        assert key(out.cursor) < min(key(f) for f in failed)
    assert out.status == run_status(counts_of(items))


@given(runs())
def test_strict_rule_never_moves_on_failure(data):
    _kind, items, old = data
    out = run(items, old, rule="strict")
    if any(it.status == "failed" for it in items):
        assert out.cursor == old
    elif old is not None:
        assert key(out.cursor) >= key(old)


@given(runs(statuses=("success", "skipped", "superseded")))
def test_cursor_reaches_the_maximum_once_everything_finishes(data):
    _kind, items, old = data
    for rule in ("low_water_mark", "strict"):
        out = run(items, old, rule=rule)
        everything = [it.checkpoint for it in items] + ([old] if old is not None else [])
        expected = reduce_by_max(everything)
        assert (out.cursor is None and expected is None) or key(out.cursor) == key(expected)
        assert out.status == "success"


@given(runs(), st.data())
def test_retries_and_skips_move_the_cursor_forward_only_and_converge(data, draw):
    """A run reconciled again and again while its failed items are retried (success or failure
    again) or skipped: each reconcile keeps the invariants, and the end is the maximum."""
    _kind, items, old = data
    cursor = old
    items = list(items)
    for _round in range(4):
        out = run(items, cursor)
        if cursor is not None:
            assert key(out.cursor) >= key(cursor)
        failed = [it.checkpoint for it in items if it.status == "failed"]
        if failed and out.cursor != cursor:
            assert key(out.cursor) < min(key(f) for f in failed)
        cursor = out.cursor
        items = [
            ItemCheckpoint(it.id, draw.draw(st.sampled_from(["success", "failed", "skipped"])), it.checkpoint)
            if it.status == "failed" else it
            for it in items
        ]
    items = [ItemCheckpoint(it.id, "success" if it.status == "failed" else it.status, it.checkpoint) for it in items]
    final = run(items, cursor)
    expected = reduce_by_max([it.checkpoint for it in items] + ([old] if old is not None else []))
    assert (final.cursor is None and expected is None) or key(final.cursor) == key(expected)


mixed_values = st.one_of(number_checkpoints, plain_checkpoints, iso_checkpoints, st.none(),
                         st.sampled_from([float("nan"), float("inf"), True, {"a": 1}, [1, 2]]))


@given(st.lists(st.tuples(mixed_values, st.sampled_from(["success", "failed", "skipped"])), max_size=20),
       st.one_of(st.none(), number_checkpoints, plain_checkpoints, st.just({"x": 1})),
       st.sampled_from(["low_water_mark", "strict"]))
def test_checkpoints_that_cannot_be_ordered_never_raise_and_hold_the_cursor(rows, old, rule):
    items = [ItemCheckpoint(i + 1, status, cp) for i, (cp, status) in enumerate(rows)]
    out = run(items, old, rule=rule)  # never raises
    assert out.final
    bad = {i.item_id for i in out.invalid}
    assert all(next(it for it in items if it.id == b).status == "success" for b in bad)
    assert all(i.message.startswith("invalid checkpoint: ") for i in out.invalid)
    assert out.counts.failed == sum(1 for it in items if it.status == "failed") + len(bad)
    if out.error:
        assert out.status == "failed" and out.cursor == old
    if bad or any(it.status == "failed" for it in items):
        if rule == "strict" or bad:
            assert out.cursor == old
    if out.cursor is not None and out.cursor != old:
        key(out.cursor)  # the cursor is always orderable
        if old is not None:
            assert key(out.cursor) > key(old)


def test_a_reducer_that_raises_fails_the_run_and_keeps_the_cursor():
    def boom(values):  # type: ignore[no-untyped-def]
        raise ValueError("cannot merge")

    items = [ItemCheckpoint(1, "success", {"a": 1})]
    out = run(items, {"a": 0}, reduce=boom)
    assert (out.status, out.cursor) == ("failed", {"a": 0})
    assert "reduce_checkpoints raised ValueError: cannot merge" in (out.error or "")


def test_unorderable_values_raise_a_clear_type_error():
    for value in (float("nan"), {"a": 1}, True):
        try:
            checkpoint_key(value)
        except UnorderableCheckpoint as exc:
            assert isinstance(exc, TypeError) and "cannot be ordered" in str(exc)
        else:  # pragma: no cover
            raise AssertionError(value)


# --- the engine agrees with the pure function, on both databases ---------------------------------
engine_runs = st.tuples(
    kinds.flatmap(lambda k: st.tuples(
        st.lists(st.tuples(of_kind(k), st.sampled_from(["success", "success", "failed", "skipped"])),
                 min_size=1, max_size=12),
        st.one_of(st.none(), of_kind(k)),
    )),
    st.sampled_from(["low_water_mark", "strict"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(engine_runs)
def test_engine_reconcile_agrees_with_the_pure_rule(store, case):
    from integrations_dagster import SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticProvider

    (rows, old), rule = case
    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]),
                        settings=SyncSettings(cursor_rule=rule))
    integ = store.create_integration(provider_key="synthetic", name="p")
    store.update_integration(integ.id, cursor=old)
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status=status, attempts=1, deferrals=0,
                 external_id=str(i), checkpoint=cp, event_type="x:Y", payload={}, created_at=engine.clock())
            for i, (cp, status) in enumerate(rows)
        ])
        conn.execute(__import__("sqlalchemy").text("UPDATE sync_runs SET status = 'processing', "
                                                   "enumerated_at = started_at WHERE id = :i"), {"i": start.run_id})
    ids = [it["id"] for it in store.items_for_run(start.run_id)]
    items = [ItemCheckpoint(i, status, cp) for i, (cp, status) in zip(ids, rows)]
    expected = run(items, old, rule=rule)
    got = engine.reconcile(store, start.run_id)
    assert (got.status, got.failed) == (expected.status, expected.counts.failed)
    if expected.cursor is None:
        assert got.cursor_after is None
    else:
        assert key(got.cursor_after) == key(expected.cursor)
    assert store.get_integration(integ.id).cursor == got.cursor_after


storable_mixed = st.one_of(number_checkpoints, plain_checkpoints, tricky_checkpoints, st.none(),
                           st.sampled_from([True, {"a": 1}, [1, 2]]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(storable_mixed, st.sampled_from(["success", "failed", "skipped"])), min_size=1, max_size=10),
       st.one_of(st.none(), number_checkpoints, plain_checkpoints), st.sampled_from(["low_water_mark", "strict"]))
def test_engine_reconcile_never_raises_on_mixed_checkpoints(store, rows, old, rule):
    from sqlalchemy import text

    from integrations_dagster import SyncSettings
    from integrations_dagster.engine.engine import SyncEngine
    from integrations_dagster.authoring.listeners import ListenerRegistry
    from providers.synthetic import SyntheticProvider

    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry([]),
                        settings=SyncSettings(cursor_rule=rule))
    integ = store.create_integration(provider_key="synthetic", name="p")
    store.update_integration(integ.id, cursor=old)
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with store.begin() as conn:
        store.insert_items(conn, [
            dict(run_id=start.run_id, integration_id=integ.id, chunk=0, status=status, attempts=1, deferrals=0,
                 external_id=str(i), checkpoint=cp, event_type="x:Y", payload={}, created_at=engine.clock())
            for i, (cp, status) in enumerate(rows)
        ])
        conn.execute(text("UPDATE sync_runs SET status = 'processing', enumerated_at = started_at WHERE id = :i"),
                     {"i": start.run_id})
    ids = [it["id"] for it in store.items_for_run(start.run_id)]
    expected = run([ItemCheckpoint(i, status, cp) for i, (cp, status) in zip(ids, rows)], old, rule=rule)
    got = engine.reconcile(store, start.run_id)  # never raises
    assert (got.final, got.status, got.failed, got.cursor_after) == (
        True, expected.status, expected.counts.failed, expected.cursor)
    assert store.get_run(start.run_id)["status"] == expected.status
    again = engine.reconcile(store, start.run_id)
    assert not again.changed and again.status == expected.status
