"""Definitions for the scheduler and sync-now tests (importable, so Dagster can load and reconstruct them).

``make_defs(database_url, ...)`` builds them for one test database; ``defs`` is the module-level
``Definitions`` a workspace.yaml can name (its database comes from ``INTEGRATIONS_DATABASE_URL``).
``GATE`` lets a test hold a sync inside its listener (in flight) until the test releases it.
"""

from __future__ import annotations

import threading
from typing import Any

from dagster import Definitions

from integrations_dagster import HealthPolicy, Integration, Provider, SyncSession, SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider


class Gate:
    """Blocks listeners of the integrations in ``hold`` until ``release``; ``entered`` says one arrived."""

    def __init__(self) -> None:
        self.hold: set[int] = set()
        self.entered = threading.Event()
        self.released = threading.Event()

    def reset(self) -> None:
        self.hold.clear()
        self.entered.clear()
        self.released.clear()


GATE = Gate()
SEEN: list[tuple[int, str]] = []


def record(event: SyntheticItem) -> None:
    if event.integration_id in GATE.hold:
        GATE.entered.set()
        if not GATE.released.wait(timeout=30):
            raise TimeoutError("the test never released the gate")
    if event.poisoned:
        raise ValueError(f"poisoned item {event.external_id}")
    SEEN.append((event.integration_id, event.external_id))


class ManualProvider(Provider):
    """No default interval: only integrations with their own interval or cron are scheduled."""

    key = "manual"

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        return None


class TokenRefused(Exception):
    """What a provider raises when the API refuses its token (the HTTP layer's 401/403 does the same)."""

    auth_failure = True


class AuthFailProvider(Provider):
    """Every enumeration is refused with 401 (the provider's own authentication signal)."""

    key = "authfail"
    default_sync_interval = 10

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        raise TokenRefused("401 Unauthorized: bad credentials")


def make_defs(
    database_url: str | None = None,
    settings: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> Definitions:
    base: dict[str, Any] = dict(item_backoff=[0.0], item_tries=2, inline_wait_max=5.0)
    if database_url is not None:
        base["database_url"] = database_url
    base.update(settings or {})
    return build_definitions(
        providers=[SyntheticProvider(), ManualProvider(), AuthFailProvider()],
        listeners=[(SyntheticItem, record)],
        settings=SyncSettings(**base),
        health=HealthPolicy(**(health or {})),
        operator_jobs=False,
    )


defs = make_defs()
