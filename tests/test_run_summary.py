"""Issue 9 point 8: pruning a run's item rows does not rewrite its history.

The daily prune deletes success/skipped rows older than 30 days. Before, skipping a partial run's
failed item after that recomputed the run from what was left (``items_total 1, success 0``,
``SyncCompleted(success_count=0)``) and the cursor fell short. Now prune adds the rows it deletes to
``sync_runs.pruned_counts``, and reconcile keeps, per gap between the run's failed checkpoints, the
largest completed checkpoint (``kept_checkpoints``): counts and cursor stay right, on both databases.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from integrations_dagster import SyncCompleted, SyncSettings
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.engine.cursor import LOW_WATER, STRICT, CursorPolicy, ItemCheckpoint, settle
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.operations import actions as ops
from integrations_dagster.store import models as m
from integrations_dagster.store import utcnow
from providers.synthetic import SyntheticItem, SyntheticProvider, checkpoint_for

POISON: set[str] = set()
COMPLETED_EVENTS: list[SyncCompleted] = []


def record(event: SyntheticItem) -> None:
    if event.external_id in POISON:
        raise ValueError(f"poisoned item {event.external_id}")


def completed(event: SyncCompleted) -> None:
    COMPLETED_EVENTS.append(event)


@pytest.fixture(autouse=True)
def _clear():  # type: ignore[no-untyped-def]
    POISON.clear()
    COMPLETED_EVENTS.clear()
    yield
    POISON.clear()


@pytest.fixture
def engine() -> SyncEngine:
    return SyncEngine(
        providers=[SyntheticProvider()],
        listeners=ListenerRegistry.build([(SyntheticItem, record), (SyncCompleted, completed)]),
        settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=1, chunk_size=10, job_timeout=60),
    )


def run_sync(store, engine, integration_id: int) -> int:  # type: ignore[no-untyped-def]
    start = engine.start_run(store, integration_id, dagster_run_id=None)
    result = engine.enumerate(store, store.get_integration(integration_id), start.run_id)
    for chunk in range(result.chunks):
        engine.process_chunk(store, start.run_id, chunk)
    engine.reconcile(store, start.run_id)
    return start.run_id


def run_row(store, run_id: int) -> Any:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return conn.execute(select(m.sync_runs).where(m.sync_runs.c.id == run_id)).first()


def failed(store, integration_id: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {i["external_id"]: i["id"] for i in ops.list_failed_items(store, integration_id=integration_id)}


def prune_all(store) -> int:  # type: ignore[no-untyped-def]
    return ops.prune(store, days=0, now=utcnow() + timedelta(seconds=5)).sync_items_deleted


def summary(store, integration_id: int, run_id: int) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    r = run_row(store, run_id)
    return r.status, r.items_total, r.success_count, r.failed_count, r.skipped_count, \
        store.get_integration(integration_id).cursor


@pytest.mark.parametrize("pruned", [False, True])
def test_prune_then_skip_keeps_the_counts_and_the_cursor(store, engine, pruned):
    """The same operator story with and without a prune in the middle ends the same way."""
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="s", metadata={"items": 30})
    POISON.update({"item-5", "item-20"})
    run_id = run_sync(store, engine, integ.id)
    assert summary(store, integ.id, run_id) == ("partial", 30, 28, 2, 0, checkpoint_for(4))
    if pruned:
        assert prune_all(store) == 28  # every success row of the partial run
        assert [i["status"] for i in store.items_for_run(run_id)] == ["failed", "failed"]
        assert run_row(store, run_id).pruned_counts == {"success": 28}
    POISON.clear()
    ops.skip_item(store, engine, failed(store, integ.id)["item-5"])
    # the low-water mark moves to just below the other failure: a pruned checkpoint (item-19)
    assert summary(store, integ.id, run_id) == ("partial", 30, 28, 1, 1, checkpoint_for(19))
    if pruned:
        assert prune_all(store) == 1  # the skipped row now
    ops.skip_item(store, engine, failed(store, integ.id)["item-20"])
    assert summary(store, integ.id, run_id) == ("success", 30, 28, 0, 2, checkpoint_for(29))
    [done] = COMPLETED_EVENTS
    assert (done.items_total, done.success_count, done.skipped_count) == (30, 28, 2)
    assert done.cursor_after == checkpoint_for(29)
    assert ops.advance_cursor(store, engine, integ.id).cursor_after == checkpoint_for(29)  # reconcile again: same
    assert summary(store, integ.id, run_id) == ("success", 30, 28, 0, 2, checkpoint_for(29))


def test_a_retried_item_after_prune_settles_the_run_with_every_count(store, engine):
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="s", metadata={"items": 25})
    POISON.add("item-7")
    run_id = run_sync(store, engine, integ.id)
    assert prune_all(store) == 24
    POISON.clear()
    ops.retry_item(store, engine, failed(store, integ.id)["item-7"])
    assert summary(store, integ.id, run_id) == ("success", 25, 25, 0, 0, checkpoint_for(24))
    assert COMPLETED_EVENTS[-1].success_count == 25


def test_runs_settled_before_the_summary_existed_keep_their_rows_until_reconciled(store, engine):
    """A database that moves forward: runs settled before migration 0015 have no kept checkpoints.
    A partial one keeps its completed rows (a later reconcile needs them) until its next reconcile
    records them; a successful one needs none."""
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="s", metadata={"items": 12})
    ok = ops.add_integration(store, engine=engine, provider_key="synthetic", name="ok", metadata={"items": 5})
    POISON.add("item-8")  # the other integration has item-0 to item-4
    partial_run = run_sync(store, engine, integ.id)
    ok_run = run_sync(store, engine, ok.id)
    with store.begin() as conn:
        conn.execute(update(m.sync_runs).values(kept_checkpoints=None))
    assert prune_all(store) == 5  # only the successful run's rows
    assert len(store.items_for_run(partial_run)) == 12
    assert run_row(store, ok_run).pruned_counts == {"success": 5}
    assert ops.advance_cursor(store, engine, ok.id).cursor_after == checkpoint_for(4)  # nothing rewritten
    assert summary(store, ok.id, ok_run) == ("success", 5, 5, 0, 0, checkpoint_for(4))
    # the next reconcile (here advance-cursor; nothing else changes, no events) records the summary
    assert ops.advance_cursor(store, engine, integ.id).cursor_after == checkpoint_for(7)
    assert run_row(store, partial_run).kept_checkpoints == [checkpoint_for(7), checkpoint_for(11)]
    assert prune_all(store) == 11
    POISON.clear()
    ops.skip_item(store, engine, failed(store, integ.id)["item-8"])
    assert summary(store, integ.id, partial_run) == ("success", 12, 11, 0, 1, checkpoint_for(11))


def test_an_unsettled_run_keeps_its_rows(store, engine):
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="s", metadata={"items": 20})
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    engine.process_chunk(store, start.run_id, 0)  # half done, still processing
    assert prune_all(store) == 0
    engine.process_chunk(store, start.run_id, 1)
    engine.reconcile(store, start.run_id)
    assert prune_all(store) == 20
    assert summary(store, integ.id, start.run_id) == ("success", 20, 20, 0, 0, checkpoint_for(19))


# --- the pure rule: what is kept is all a later settle needs ------------------------------------------------
checkpoints = st.one_of(st.integers(0, 30), st.sampled_from([f"{i:03d}" for i in range(20)]))


def _per_stream_max(cps: list[Any]) -> Any:
    out: dict[str, int] = {}
    for cp in cps:
        for k, v in (cp or {}).items():
            out[k] = max(out.get(k, v), v)
    return out or None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=25),
    resolve=st.lists(st.booleans(), max_size=25),
    rule=st.sampled_from([LOW_WATER, STRICT]),
    structured=st.booleans(),
)
def test_settling_from_kept_checkpoints_equals_settling_from_every_row(items, resolve, rule, structured):
    """A run settles (some items failed); its completed rows are then dropped, keeping only
    ``Outcome.kept``; some failed items are resolved (skipped); settling again from kept + what is
    left gives exactly the cursor and status that settling from every row gives."""
    wrap = (lambda v: {"s": v}) if structured else (lambda v: v)
    policy = CursorPolicy(rule=rule, ordered=not structured, reduce=_per_stream_max if structured else None)
    done = [ItemCheckpoint(i + 1, "success", wrap(cp)) for i, (cp, ok) in enumerate(items) if ok]
    held = [ItemCheckpoint(i + 1, "failed", wrap(cp)) for i, (cp, ok) in enumerate(items) if not ok]
    first = settle({"success": len(done), "failed": len(held)}, held, done, old_cursor=None, policy=policy)
    assert first.kept is not None
    flags = resolve + [False] * len(held)
    now_skipped = [ItemCheckpoint(h.id, "skipped", h.checkpoint) for h, f in zip(held, flags) if f]
    still = [h for h, f in zip(held, flags) if not f]
    counts = {"success": len(done), "skipped": len(now_skipped), "failed": len(still)}
    full = settle(counts, still, sorted(done + now_skipped), old_cursor=None, policy=policy)
    kept = [ItemCheckpoint(0, "skipped", cp) for cp in first.kept]
    from_kept = settle(counts, still, kept + now_skipped, old_cursor=None, policy=policy)
    assert (from_kept.status, from_kept.cursor) == (full.status, full.cursor)


def test_a_pruned_run_whose_failure_a_later_run_supersedes_keeps_its_counts(store, engine):
    """Run A fails item-5 and its successes are pruned; run B delivers item-5 again: A's failed item
    is superseded and A settles with every count (its pruned rows included)."""
    integ = ops.add_integration(store, engine=engine, provider_key="synthetic", name="s", metadata={"items": 30})
    POISON.add("item-5")
    run_a = run_sync(store, engine, integ.id)
    assert prune_all(store) == 29
    POISON.clear()
    start = engine.start_run(store, integ.id, dagster_run_id=None)  # from the low-water cursor: item-5 .. 29
    engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    engine.process_chunk(store, start.run_id, 0)  # item-5 delivered again; B is still processing
    engine.reconcile(store, run_a)  # A's own reconcile supersedes its failed item
    a = run_row(store, run_a)
    assert (a.status, a.items_total, a.success_count, a.failed_count, a.superseded_count) == ("success", 30, 29, 0, 1)
    for chunk in (1, 2):
        engine.process_chunk(store, start.run_id, chunk)
    engine.reconcile(store, start.run_id)
    run_b = start.run_id
    a, b = run_row(store, run_a), run_row(store, run_b)
    assert (a.status, a.items_total, a.success_count, a.failed_count, a.superseded_count) == ("success", 30, 29, 0, 1)
    assert (b.status, b.items_total, b.success_count) == ("success", 25, 25)
    assert store.get_integration(integ.id).cursor == checkpoint_for(29)
    engine.reconcile(store, run_a)  # again: nothing rewritten
    assert run_row(store, run_a).items_total == 30
