"""Issue 9 point 4: the activity provider keeps late and same-second events (overlap window, de-dup by id).

GitHub lists an event 30 s to hours after it happened, and a second can hold events the last run did
not see yet: filtering ``created_at > cursor`` dropped both. Each run now re-reads ``overlap_seconds``
before the cursor and dispatches only what no earlier run delivered, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import select

from integrations_dagster import execute_sync
from providers.github.activity import OVERLAP_SECONDS
from providers.github.common import shift_iso
from providers.github.fake_api import FakeGitHub
from providers.github.tables import activities
from tests.test_github import TOKEN, latest, ref


@pytest.fixture(autouse=True)
def _plaintext(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=20, token=TOKEN) as server:
        yield server


def stored_ids(store, integration_id: int) -> set[str]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return set(conn.execute(select(activities.c.source_id)
                                .where(activities.c.integration_id == integration_id)).scalars())


def test_late_and_same_second_events_are_stored_once(store, db_url, fake, dagster_instance):
    integ = store.create_integration(
        provider_key="github_activity", name="act",
        metadata={"base_url": fake.url, "since": "2000-01-01T00:00:00Z"}, credentials={"token": TOKEN},
    )
    assert execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance).status \
        == DagsterRunStatus.SUCCESS
    cursor = store.get_integration(integ.id).cursor
    assert len(stored_ids(store, integ.id)) == 50 + 90
    # What the window re-reads that is already stored (at least the events at the cursor itself):
    in_window = [e for e in fake.events if e["created_at"] >= shift_iso(cursor["events"], -OVERLAP_SECONDS)] + [
        n for n in fake.notifications if n["updated_at"] >= shift_iso(cursor["notifications"], -OVERLAP_SECONDS)]
    assert len(in_window) >= 2

    late = fake.add_events([shift_iso(cursor["events"], -600)])  # happened 10 min before the cursor, listed now
    same = fake.add_events([cursor["events"]])  # in the cursor's own second
    notes = fake.add_notifications([cursor["notifications"], shift_iso(cursor["notifications"], -60)])
    run = execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    new = {f"event:{i}" for i in late + same} | {f"notification:{i}" for i in notes}
    assert new <= stored_ids(store, integ.id)  # nothing dropped
    sr = latest(store, integ.id)
    assert sr["items_total"] == 4  # only the new ones: the window's old events were delivered already
    assert {i["external_id"] for i in store.items_for_run(sr["id"])} == new
    assert store.get_integration(integ.id).cursor == cursor  # monotonic: late events do not move it back

    run = execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    assert latest(store, integ.id)["items_total"] == 0  # and not again the run after


def test_a_notification_updated_again_is_dispatched_again(store, db_url, fake, dagster_instance):
    """De-dup is by id *and* timestamp: a notification thread updated again is a new version."""
    integ = store.create_integration(
        provider_key="github_activity", name="act",
        metadata={"base_url": fake.url, "since": "2000-01-01T00:00:00Z"}, credentials={"token": TOKEN},
    )
    execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    cursor = store.get_integration(integ.id).cursor
    [note] = fake.add_notifications([cursor["notifications"]])
    execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    first = latest(store, integ.id)
    [item] = store.items_for_run(first["id"])
    assert item["external_id"] == f"notification:{note}"
    # the same thread, updated one second later
    fake.update_notification(note, shift_iso(cursor["notifications"], 1))
    execute_sync(ref(db_url), "github_activity", integ.id, instance=dagster_instance)
    again = latest(store, integ.id)
    assert [i["external_id"] for i in store.items_for_run(again["id"])] == [f"notification:{note}"]
    assert again["id"] != first["id"]
