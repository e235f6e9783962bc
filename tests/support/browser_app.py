"""The code location of the browser tests (``dagster dev`` loads ``defs`` from here in a subprocess).

Listener behaviour is steered by a file, because the runs execute in processes the test does not own:
an item marked poisoned by the synthetic provider (integration metadata ``fail_external_ids``) fails
until the file named by ``BROWSER_APP_FIXED_FILE`` exists (the test "fixes the listener" by creating it).
The state store comes from ``INTEGRATIONS_DATABASE_URL`` (``database_url=None``). One unsuccessful run
makes an integration ``failing`` here (the default needs three), so the ``synced_within_interval`` check
goes red after the poisoned run and green again after its re-execution.
"""

from __future__ import annotations

import os
from pathlib import Path

from integrations_dagster import HealthPolicy, SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider


def fixed() -> bool:
    path = os.environ.get("BROWSER_APP_FIXED_FILE")
    return bool(path) and Path(path).exists()


def store_item(event: SyntheticItem) -> None:
    if event.poisoned and not fixed():
        raise ValueError(f"listener cannot store {event.external_id}: value {event.value!r} is poisoned")


defs = build_definitions(
    providers=[SyntheticProvider()],
    listeners=[(SyntheticItem, store_item)],
    settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=2, inline_wait_max=5.0, chunk_size=10),
    health=HealthPolicy(degraded_after=1, failing_after=1),
    sensors=False,
    operator_jobs=False,
)
