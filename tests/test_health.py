"""Health states, their multipliers and the next sync time: the rules, then through the real sync job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from dagster import DagsterRunStatus
from pydantic import ValidationError

from integrations_dagster import DefinitionsRef, HealthPolicy, Store, execute_sync
from integrations_dagster.orchestration.code_location import engine_of
from integrations_dagster.engine.cron import next_cron_time
from integrations_dagster.engine.health import after_run, next_sync_time
from tests.support import sched_app
from tests.support.sched_tools import T0, Clock

POLICY = HealthPolicy()


def row(**kw):  # type: ignore[no-untyped-def]
    base = dict(consecutive_failures=0, consecutive_auth_failures=0, health="healthy", enabled=True,
                sync_interval_minutes=5, sync_cron=None)
    base.update(kw)
    return SimpleNamespace(**base)


def run(status: str, integ=None, *, auth: bool = False, policy: HealthPolicy = POLICY, default=None):  # type: ignore[no-untyped-def]
    return after_run(integration=integ or row(), run_status=status, auth_failure=auth, now=T0,
                     default_interval=default, policy=policy)


def chain(statuses: list[str], *, auth: bool = False, policy: HealthPolicy = POLICY) -> dict:
    integ = row()
    values: dict = {}
    for status in statuses:
        values = run(status, integ, auth=auth, policy=policy)
        integ = row(**{**vars(integ), **{k: v for k, v in values.items() if k in vars(integ)}})
    return values


# --- the rules -------------------------------------------------------------------------------

def test_defaults_are_the_documented_ones():
    p = HealthPolicy()
    assert (p.degraded_after, p.failing_after, p.auth_failing_after, p.auth_disable_after) == (1, 3, 2, 10)
    assert (p.degraded_multiplier, p.failing_multiplier) == (2.0, 10.0)


def test_success_is_healthy_at_1x_and_sets_last_synced_at():
    v = run("success", row(consecutive_failures=5, health="failing"))
    assert v["health"] == "healthy" and v["consecutive_failures"] == 0
    assert v["last_synced_at"] == T0 and v["next_sync_at"] == T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("statuses", "health", "minutes"),
    [
        (["partial"], "degraded", 10),                      # 2x
        (["failed", "failed"], "degraded", 10),
        (["failed", "partial", "failed"], "failing", 50),    # 10x
        (["failed"] * 3 + ["success"], "healthy", 5),        # one clean run recovers
    ],
)
def test_each_state_and_its_multiplier(statuses, health, minutes):
    v = chain(statuses)
    assert v["health"] == health and v["next_sync_at"] == T0 + timedelta(minutes=minutes)


def test_multipliers_and_thresholds_are_configurable():
    policy = HealthPolicy(degraded_after=2, failing_after=4, degraded_multiplier=3, failing_multiplier=6)
    assert chain(["failed"], policy=policy)["health"] == "healthy"
    v = chain(["failed"] * 2, policy=policy)
    assert v["health"] == "degraded" and v["next_sync_at"] == T0 + timedelta(minutes=15)
    v = chain(["failed"] * 4, policy=policy)
    assert v["health"] == "failing" and v["next_sync_at"] == T0 + timedelta(minutes=30)


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValidationError):
        HealthPolicy(degraded_after=3, failing_after=2)
    with pytest.raises(ValidationError):
        HealthPolicy(auth_failing_after=5, auth_disable_after=3)


def test_auth_failures_go_to_failing_quickly_then_disable_after_ten():
    assert chain(["failed"], auth=True)["health"] == "degraded"
    assert chain(["failed"] * 2, auth=True)["health"] == "failing"  # not 3: a refused token does not heal
    v = chain(["failed"] * 9, auth=True)
    assert v["health"] == "failing" and v["next_sync_at"] == T0 + timedelta(minutes=50)
    v = chain(["failed"] * 10, auth=True)
    assert (v["health"], v["enabled"], v["next_sync_at"]) == ("disabled", False, None)
    assert "10 consecutive authentication failures" in v["disabled_reason"]
    assert chain(["failed"] * 50, auth=True, policy=HealthPolicy(auth_disable_after=None))["health"] == "failing"


def test_other_failures_never_disable():
    assert chain(["failed"] * 50)["health"] == "failing"


def test_a_non_auth_failure_resets_the_auth_count():
    integ = row(consecutive_failures=1, consecutive_auth_failures=1)
    assert run("failed", integ)["consecutive_auth_failures"] == 0


def test_disabled_stays_disabled_and_unscheduled():
    v = run("success", row(enabled=False, health="disabled"))
    assert (v["health"], v["next_sync_at"]) == ("disabled", None)


def test_skipped_run_changes_nothing():
    assert run("skipped", row(consecutive_failures=2, health="degraded")) == {}


def test_interval_falls_back_to_provider_default_else_not_scheduled():
    assert run("success", row(sync_interval_minutes=None), default=7)["next_sync_at"] == T0 + timedelta(minutes=7)
    assert run("success", row(sync_interval_minutes=None), default=None)["next_sync_at"] is None


def test_cron_in_utc():
    now = datetime(2030, 1, 7, 10, 0, 5, tzinfo=UTC)
    assert next_sync_time(now=now, interval_minutes=5, cron="*/15 * * * *", multiplier=1) == now.replace(
        minute=15, second=0)
    # the multiplier stretches the gap: degraded waits two fire times, failing ten
    assert next_sync_time(now=now, interval_minutes=None, cron="*/15 * * * *", multiplier=2) == now.replace(
        minute=30, second=0)
    assert next_sync_time(now=now, interval_minutes=None, cron="*/15 * * * *", multiplier=10) == now.replace(
        hour=12, minute=30, second=0)
    # the cron wins over the interval when both are set
    v = run("partial", row(sync_cron="0 * * * *", sync_interval_minutes=5))
    assert v["next_sync_at"] == datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


def test_cron_with_a_named_timezone_follows_its_wall_clock():
    expr = "TZ=Europe/Paris 0 9 * * *"
    winter = next_cron_time(expr, datetime(2030, 1, 7, 12, 0, tzinfo=UTC))
    summer = next_cron_time(expr, datetime(2030, 7, 7, 12, 0, tzinfo=UTC))
    assert winter == datetime(2030, 1, 8, 8, 0, tzinfo=UTC)  # 09:00 CET = 08:00 UTC
    assert summer == datetime(2030, 7, 8, 7, 0, tzinfo=UTC)  # 09:00 CEST = 07:00 UTC
    # across the spring DST change: still 09:00 Paris time
    assert next_cron_time(expr, datetime(2030, 3, 30, 12, 0, tzinfo=UTC)) == datetime(2030, 3, 31, 7, 0, tzinfo=UTC)
    assert next_sync_time(now=datetime(2030, 1, 7, 12, 0, tzinfo=UTC), interval_minutes=None, cron=expr,
                          multiplier=2) == datetime(2030, 1, 9, 8, 0, tzinfo=UTC)


def test_invalid_cron_does_not_break_reconciliation():
    v = run("success", row(sync_cron="every tuesday", sync_interval_minutes=5))
    assert v["next_sync_at"] == T0 + timedelta(minutes=5)


# --- through the real sync job ----------------------------------------------------------------

def sync(db_url: str, dagster_instance, provider: str, integration_id: int, clock: Clock, **health):  # type: ignore[no-untyped-def]
    ref = DefinitionsRef("tests.support.sched_app", "make_defs", {"database_url": db_url, "health": health})
    engine_of(ref.load()).clock = clock
    return execute_sync(ref, provider, integration_id, instance=dagster_instance, trigger="schedule")


def test_reconciled_run_sets_last_synced_and_next_sync(store: Store, db_url, dagster_instance):
    clock = Clock(T0)
    a = store.create_integration(provider_key="synthetic", name="a", metadata={"items": 3}, sync_interval_minutes=5,
                                 now=T0)
    assert sync(db_url, dagster_instance, "synthetic", a.id, clock).status == DagsterRunStatus.SUCCESS
    got = store.get_integration(a.id)
    assert (got.health, got.last_synced_at, got.next_sync_at, got.last_run_status) == (
        "healthy", T0, T0 + timedelta(minutes=5), "success")


def test_failed_items_degrade_then_fail_with_configured_multipliers(store: Store, db_url, dagster_instance):
    clock = Clock(T0)
    a = store.create_integration(provider_key="synthetic", name="a",
                                 metadata={"items": 2, "fail_external_ids": ["item-1"]}, sync_interval_minutes=5,
                                 now=T0)
    health = {"failing_after": 2, "degraded_multiplier": 3, "failing_multiplier": 7}
    sync(db_url, dagster_instance, "synthetic", a.id, clock, **health)
    got = store.get_integration(a.id)
    assert (got.health, got.next_sync_at) == ("degraded", T0 + timedelta(minutes=15))
    clock.advance(minutes=15)
    store.update_integration(a.id, metadata={"items": 3, "fail_external_ids": ["item-1"]})
    sync(db_url, dagster_instance, "synthetic", a.id, clock, **health)
    got = store.get_integration(a.id)
    assert (got.health, got.consecutive_failures, got.next_sync_at) == (
        "failing", 2, clock() + timedelta(minutes=35))


def test_repeated_auth_failures_through_the_job(store: Store, db_url, dagster_instance):
    clock = Clock(T0)
    a = store.create_integration(provider_key="authfail", name="a", now=T0)  # provider default: 10 min
    health = {"auth_disable_after": 3}
    sync(db_url, dagster_instance, "authfail", a.id, clock, **health)
    assert store.get_integration(a.id).health == "degraded"
    sync(db_url, dagster_instance, "authfail", a.id, clock, **health)
    got = store.get_integration(a.id)
    assert (got.health, got.consecutive_auth_failures, got.next_sync_at) == (
        "failing", 2, T0 + timedelta(minutes=100))
    assert store.runs_for_integration(a.id, limit=1)[0]["auth_failure"] is True
    sync(db_url, dagster_instance, "authfail", a.id, clock, **health)
    got = store.get_integration(a.id)
    assert (got.health, got.enabled, got.next_sync_at) == ("disabled", False, None)
    assert "authentication" in got.disabled_reason


def test_cron_integration_through_the_job(store: Store, db_url, dagster_instance):
    clock = Clock(datetime(2030, 1, 7, 10, 7, tzinfo=UTC))
    a = store.create_integration(provider_key="synthetic", name="a", metadata={"items": 1},
                                 sync_cron="TZ=America/New_York 30 8 * * *", now=clock())
    sync(db_url, dagster_instance, "synthetic", a.id, clock)
    # 08:30 in New York (EST, UTC-5) is 13:30 UTC
    assert store.get_integration(a.id).next_sync_at == datetime(2030, 1, 7, 13, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset():  # type: ignore[no-untyped-def]
    sched_app.GATE.reset()
    sched_app.SEEN.clear()
    yield
