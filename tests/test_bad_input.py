"""Bad input gets a clear error and loses nothing: config, payloads, ids, dispatch arguments."""

from __future__ import annotations

import pytest
from dagster import DagsterRunStatus
from pydantic import ValidationError

from integrations_dagster import (
    DefinitionsRef,
    Integration,
    RateLimit,
    SyncSettings,
    build_definitions,
    execute_sync,
)
from integrations_dagster.errors import IntegrationsError
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.authoring.session import SyncSession
from providers.synthetic import SyntheticItem, SyntheticProvider


def test_settings_reject_nonsense():
    with pytest.raises(ValidationError, match="item_backoff"):
        SyncSettings(item_backoff=[])
    with pytest.raises(ValidationError, match="item_tries"):
        SyncSettings(item_tries=0)
    with pytest.raises(ValidationError, match="cursor_rule"):
        SyncSettings(cursor_rule="sometimes")


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_ITEM_TRIES", "2")
    monkeypatch.setenv("INTEGRATIONS_ITEM_BACKOFF", "[1, 2]")
    s = SyncSettings()
    assert (s.item_tries, s.item_backoff, s.backoff_for(1), s.backoff_for(9)) == (2, [1, 2], 1.0, 2.0)


def test_rate_limit_rejects_nonsense():
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.per_minute(0)
    assert RateLimit.per_hour(5000) == RateLimit(5000, 3600.0)


def test_two_providers_with_one_key_are_refused():
    with pytest.raises(IntegrationsError, match="two providers share the key 'synthetic'"):
        build_definitions(providers=[SyntheticProvider(), SyntheticProvider()], listeners=[], sensors=False)


def test_listener_that_is_not_one_is_refused():
    with pytest.raises(TypeError, match="is not a listener"):
        ListenerRegistry.build([print])


def test_dispatch_rejects_non_events_and_non_json_checkpoints(store):
    from datetime import datetime

    integ = store.create_integration(provider_key="synthetic", name="s")
    session = SyncSession(store=store, run_id=1, integration=integ, settings=SyncSettings(), log=None)
    with pytest.raises(TypeError, match="takes a SyncItemEvent, got dict"):
        session.dispatch({"x": 1}, checkpoint_value="a")  # type: ignore[arg-type]
    event = SyntheticItem(integration_id=1, index=0, external_id="e", value="v")
    with pytest.raises(TypeError, match="pass datetimes as ISO-8601 strings"):
        session.dispatch(event, checkpoint_value=datetime.now())
    assert session.dispatched == 0


def test_github_integration_without_owner_fails_clearly_and_keeps_cursor(store, db_url, dagster_instance, monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")
    integ = store.create_integration(provider_key="github", name="g", metadata={"base_url": "http://127.0.0.1:9"},
                                     credentials={"token": "t0ken-value"})
    ref = DefinitionsRef("tests.support.gh_app", "make_defs", {"database_url": db_url})
    run = execute_sync(ref, "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.FAILURE
    sr = store.runs_for_integration(integ.id)[0]
    assert sr["status"] == "failed" and "metadata is missing owner, repo" in sr["error"]
    assert store.get_integration(integ.id).cursor is None


def test_credentials_never_in_repr_or_dump():
    integ = Integration(id=1, provider_key="github", name="n", credentials={"token": "very-secret-value"})
    assert "very-secret-value" not in repr(integ) + str(integ) + integ.model_dump_json()
