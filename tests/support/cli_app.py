"""Definitions for the CLI tests: run in a subprocess, so listener behaviour is steered by files.

- ``CLI_APP_POISON_FILE``: a file of external ids (one a line) whose listener raises; the tests edit it
  between CLI calls to "fix" an item.
- The ``tokened`` provider fails its enumeration with an error that quotes its token (as a careless
  API client might), so the tests can check that the token never reaches any output.

``database_url`` is pinned to None so every store lookup reads ``INTEGRATIONS_DATABASE_URL`` at run
time (the CLI exports its ``--database-url`` there), whichever test imported the module first.
"""

from __future__ import annotations

import os
from pathlib import Path

from integrations_dagster import Integration, Provider, SyncSession, SyncSettings, build_definitions
from providers.synthetic import SyntheticItem, SyntheticProvider


def poisoned() -> set[str]:
    path = os.environ.get("CLI_APP_POISON_FILE")
    if not path or not Path(path).exists():
        return set()
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def record(event: SyntheticItem) -> None:
    if event.external_id in poisoned():
        raise ValueError(f"poisoned item {event.external_id}")


class TokenedProvider(Provider):
    key = "tokened"

    def sync(self, integration: Integration, session: SyncSession) -> None:
        token = integration.credentials.get("token", "")
        if integration.metadata.get("fail"):
            raise RuntimeError(f"upstream refused Authorization: Bearer {token}")
        session.dispatch(SyntheticItem(integration_id=integration.id, index=0, external_id="t-0", value="v"),
                         checkpoint_value="00000000", external_id="t-0")


defs = build_definitions(
    providers=[SyntheticProvider(), TokenedProvider()],
    listeners=[(SyntheticItem, record)],
    settings=SyncSettings(database_url=None, item_backoff=[0.0], item_tries=2, inline_wait_max=5.0, chunk_size=10),
    sensors=False,
)
