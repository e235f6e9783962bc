"""Run a sync whose enumeration is SIGKILLed midway (used by test_engine's kill test)."""

from __future__ import annotations

import os
import signal
import sys

from dagster import DagsterInstance

from integrations_dagster import Integration, Provider, SyncSession, build_definitions, SyncSettings
from integrations_dagster import DefinitionsRef, execute_sync
from providers.synthetic import SyntheticItem, checkpoint_for


class KilledProvider(Provider):
    """Dispatches (and flushes) some items, then the process dies without any cleanup."""

    key = "synthetic"

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        start = 0 if session.cursor is None else int(session.cursor) + 1
        for i in range(start, start + 50):
            session.dispatch(SyntheticItem(integration_id=integration.id, index=i, external_id=f"item-{i}",
                                           value="x"), checkpoint_value=checkpoint_for(i), external_id=f"item-{i}")
        session.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def make_defs(database_url: str):  # type: ignore[no-untyped-def]
    return build_definitions(providers=[KilledProvider()], listeners=[],
                             settings=SyncSettings(database_url=database_url, flush_every=10), sensors=False,
                             operator_jobs=False)


if __name__ == "__main__":
    url, integration_id = sys.argv[1], int(sys.argv[2])
    instance = DagsterInstance.get()
    execute_sync(DefinitionsRef("tests.support.killer", "make_defs", {"database_url": url}), "synthetic",
                 integration_id, instance=instance)
