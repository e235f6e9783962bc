"""Issue 13: transactional outbox and Tether's push rules, on SQLite and PostgreSQL, against a real
local HTTP fake server (providers/tether/fake_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from integrations_dagster import Store
from integrations_dagster.engine.push import (
    Applied,
    Conflict,
    MutationStatus,
    Rejected,
    SyncResult,
    decide,
    push_pending,
)
from integrations_dagster.store.models import integrations as integrations_t
from integrations_dagster.store.outbox import Outbox, OutboxError
from providers.tether import client
from providers.tether.fake_server import TetherState, serve


@pytest.fixture
def tether() -> Iterator[tuple[TetherState, str]]:
    state = TetherState()
    srv = serve(state)
    yield state, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _integ(store: Store) -> Any:
    return store.create_integration(provider_key="tether", name="t")


def test_decide_is_tether_rules() -> None:
    assert decide(Applied("m"), attempts=1, max_retry_attempts=3).status is MutationStatus.SYNCED
    d = decide(Rejected("m", "validation_failed", {"x": 1}), attempts=1, max_retry_attempts=3)
    assert (d.status, d.reason, d.details) == (MutationStatus.FAILED, "validation_failed", {"x": 1})
    assert decide(Rejected("m", "error"), attempts=2, max_retry_attempts=3).status is MutationStatus.PENDING
    assert decide(Rejected("m", "error"), attempts=3, max_retry_attempts=3).status is MutationStatus.FAILED
    c = decide(Conflict("m", {"v": 2}), attempts=1, max_retry_attempts=3)
    assert (c.status, c.server_state) == (MutationStatus.CONFLICT, {"v": 2})


def test_mutation_commits_and_rolls_back_with_the_callers_transaction(store: Store) -> None:
    integ = _integ(store)
    box = Outbox(store)
    with pytest.raises(RuntimeError):
        with store.begin() as conn:
            # the app's own local write and its mutation, in one transaction
            conn.execute(integrations_t.update().where(integrations_t.c.id == integ.id).values(name="local edit"))
            box.record(conn, integ.id, entity="task", key=1, operation="update", payload={"title": "a"})
            raise RuntimeError("app fails after writing")
    assert box.counts(integ.id)["pending"] == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(integrations_t.c.name).where(integrations_t.c.id == integ.id)).scalar() == "t"
    with store.begin() as conn:
        conn.execute(integrations_t.update().where(integrations_t.c.id == integ.id).values(name="local edit"))
        box.record(conn, integ.id, entity="task", key=1, operation="update", payload={"title": "a"})
    assert box.counts(integ.id)["pending"] == 1
    box.record_now(integ.id, entity="task", key=2, operation="create", payload={"title": "b"})
    assert box.counts(integ.id)["pending"] == 2


def test_bad_mutation_is_refused_and_writes_nothing(store: Store) -> None:
    integ = _integ(store)
    box = Outbox(store)
    with pytest.raises(OutboxError, match="operation must be one of"):
        box.record_now(integ.id, entity="task", key=1, operation="upsert")
    with pytest.raises(OutboxError, match="entity and a key"):
        box.record_now(integ.id, entity="task", key="", operation="create")
    assert sum(box.counts(integ.id).values()) == 0


def test_push_cycle_applied_rejected_conflict_and_error_retry(store: Store, tether: tuple[TetherState, str]) -> None:
    state, url = tether
    state.put("task", "3", {"title": "server's title"})  # version 1 on the server
    integ = _integ(store)
    box = Outbox(store)
    box.record_now(integ.id, entity="task", key=1, operation="create", payload={"title": "ok"})
    box.record_now(integ.id, entity="task", key=2, operation="create", payload={"title": ""})
    box.record_now(integ.id, entity="task", key=3, operation="update", payload={"title": "mine", "base_version": 0})
    box.record_now(integ.id, entity="task", key=4, operation="create", payload={"title": "flaky", "flaky": True})
    res = push_pending(box, integ, lambda i, b: client.push(url, b), push_batch_size=2, max_retry_attempts=3)
    assert (res.pushed, res.failed, res.conflicts) == (1, 1, 1)
    assert [r.key for r in res.by_reason("validation_failed")] == ["2"]
    assert res.validation_errors() == [{"title": ["required"]}]
    conflict = box.undelivered_conflicts(integ.id)  # the engine dispatches these as tracked items
    assert [(m.key, m.server_state["title"]) for m in conflict] == [("3", "server's title")]
    assert res.retried == 1
    counts = box.counts(integ.id)
    assert (counts["synced"], counts["failed"], counts["conflict"], counts["pending"]) == (1, 1, 1, 1)
    # the "error" rejection went back to pending; the next push applies it
    res2 = push_pending(box, integ, lambda i, b: client.push(url, b))
    assert res2.pushed == 1 and box.counts(integ.id)["pending"] == 0
    assert state.records[("task", "4")]["title"] == "flaky"
    listed = {(r["entity_key"], r["status"], r["reason"]) for r in box.list(integ.id)}
    assert listed == {("2", "failed", "validation_failed"), ("3", "conflict", "conflict")}


def test_order_within_a_key_is_kept_across_retries(store: Store, tether: tuple[TetherState, str]) -> None:
    state, url = tether
    integ = _integ(store)
    box = Outbox(store)
    box.record_now(integ.id, entity="task", key=9, operation="create", payload={"title": "first", "flaky": True})
    box.record_now(integ.id, entity="task", key=9, operation="update", payload={"title": "second"})
    res = push_pending(box, integ, lambda i, b: client.push(url, b), push_batch_size=10)
    # the first was rejected with "error": the second must not overtake it
    assert res.pushed == 0 and ("task", "9") not in state.records
    push_pending(box, integ, lambda i, b: client.push(url, b), push_batch_size=10)
    assert state.records[("task", "9")]["title"] == "second"
    assert state.records[("task", "9")]["version"] == 2  # applied first, then second


def test_failed_mutation_blocks_its_key_until_skipped_or_retried(store: Store, tether: tuple[TetherState, str]) -> None:
    state, url = tether
    integ = _integ(store)
    box = Outbox(store)
    box.record_now(integ.id, entity="task", key=5, operation="create", payload={"title": ""})
    box.record_now(integ.id, entity="task", key=5, operation="update", payload={"title": "later"})
    push_pending(box, integ, lambda i, b: client.push(url, b))
    assert ("task", "5") not in state.records and box.counts(integ.id)["pending"] == 1
    failed = box.list(integ.id, statuses=["failed"])
    assert box.retry([failed[0]["id"]]) == 1 and box.counts(integ.id)["pending"] == 2
    push_pending(box, integ, lambda i, b: client.push(url, b))
    assert box.skip([failed[0]["id"]]) == 1  # failed again; the operator gives up on it
    push_pending(box, integ, lambda i, b: client.push(url, b))
    assert state.records[("task", "5")]["title"] == "later"
    assert box.counts(integ.id)["skipped"] == 1 and box.counts(integ.id)["synced"] == 1


def test_transport_error_fails_the_batch_without_losing_it(store: Store, tether: tuple[TetherState, str]) -> None:
    state, url = tether
    integ = _integ(store)
    box = Outbox(store)
    for k in range(3):
        box.record_now(integ.id, entity="task", key=k, operation="create", payload={"title": f"t{k}"})
    state.fail_next = 1
    with pytest.raises(client.TransportError):
        push_pending(box, integ, lambda i, b: client.push(url, b))
    assert box.counts(integ.id)["pending"] == 3
    assert push_pending(box, integ, lambda i, b: client.push(url, b)).pushed == 3


def test_resent_batch_is_deduplicated_by_mutation_id(store: Store, tether: tuple[TetherState, str]) -> None:
    """At least once: a batch the server applied but whose outcomes were never written is sent again."""
    state, url = tether
    integ = _integ(store)
    box = Outbox(store)
    box.record_now(integ.id, entity="task", key=1, operation="create", payload={"title": "x"})
    batch = box.eligible(integ.id, limit=10)
    client.push(url, batch)  # applied on the server; the process "dies" before writing outcomes
    assert box.counts(integ.id)["pending"] == 1
    assert push_pending(box, integ, lambda i, b: client.push(url, b)).pushed == 1
    assert state.applied_count == 1


def test_pull_paginator_follows_has_more(tether: tuple[TetherState, str]) -> None:
    state, url = tether
    for k in range(5):
        state.put("task", str(k), {"title": f"s{k}"})
    pages = list(client.pull_pages(url, None))
    assert [len(p) for p, _ in pages] == [2, 2, 1]
    assert pages[-1][1] == 5
    assert list(client.pull_pages(url, 5)) == [([], 5)]


def test_sync_result_helpers() -> None:
    assert SyncResult().skipped is False and SyncResult().by_reason("x") == []


def test_mutation_operator_actions_respect_tenants_and_refuse_bad_ids(store: Store) -> None:
    from integrations_dagster.errors import IntegrationNotFound, IntegrationsError
    from integrations_dagster.operations import actions as ops

    integ = store.create_integration(provider_key="tether", name="t", tenant="acme")
    box = Outbox(store)
    box.record_now(integ.id, entity="task", key=1, operation="create")
    (row,) = box.list(integ.id, statuses=["pending"])
    with pytest.raises(IntegrationsError, match="is pending, not failed or conflict"):
        ops.skip_mutation(store, row["id"])
    box.record_outcomes({row["id"]: decide(Rejected(row["mutation_id"], "validation_failed"), attempts=1,
                                           max_retry_attempts=3)})
    with pytest.raises(IntegrationNotFound):
        ops.skip_mutation(store, row["id"], tenant="globex")
    assert ops.list_failed_mutations(store, tenant="globex") == []
    assert [m["id"] for m in ops.list_failed_mutations(store, tenant="acme")] == [row["id"]]
    with pytest.raises(IntegrationsError, match="not found"):
        ops.retry_mutations(store, mutation_ids=[row["id"] + 999])
    res = ops.retry_mutations(store, integration_id=integ.id, tenant="acme")
    assert (res.changed, res.outbox["pending"], res.outbox["failed"]) == (1, 1, 0)
