"""Definitions for the batch-run tests (importable, so ``execute_job`` can reconstruct the batch job).

``BROKEN`` holds integration ids whose items the listener refuses (a bug being fixed: clear it, then
re-execute from failure); ``SEEN`` records every delivery as (integration id, external id).
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from integrations_dagster import SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider

BROKEN: set[int] = set()
#: integration ids whose items fail once each (the next attempt succeeds)
FLAKY: set[int] = set()
_FAILED_ONCE: set[tuple[int, str]] = set()
SEEN: list[tuple[int, str]] = []


def deliver(event: SyntheticItem) -> None:
    key = (event.integration_id, event.external_id)
    if event.integration_id in FLAKY and key not in _FAILED_ONCE:
        _FAILED_ONCE.add(key)
        raise RuntimeError(f"transient failure of {event.external_id}")
    if event.integration_id in BROKEN:
        raise RuntimeError(f"downstream refuses integration {event.integration_id}")
    SEEN.append((event.integration_id, event.external_id))


def make_defs(database_url: str | None = None, settings: dict[str, Any] | None = None) -> Definitions:
    base: dict[str, Any] = dict(item_backoff=[0.0], item_tries=2, inline_wait_max=5.0, chunk_size=2)
    if database_url is not None:
        base["database_url"] = database_url
    base.update(settings or {})
    return build_definitions(providers=[SyntheticProvider()], listeners=[(SyntheticItem, deliver)],
                             settings=SyncSettings(**base), operator_jobs=False)
