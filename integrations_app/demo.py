"""The README's first command: sync the bundled demo through the real Dagster job and say what happened.

Runs against the embedded default (SQLite under ``DAGSTER_HOME``). Every run it makes is in the
Dagster instance, so ``dagster dev`` afterwards shows them in the UI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from dagster import DagsterInstance
from sqlalchemy import func, select

from integrations_dagster import DefinitionsRef, Store, SyncSettings, execute_sync, run_summary
from integrations_dagster.operations import disable_integration
from providers.github.fake_api import FakeGitHub
from providers.github.tables import github_issues

ENV_KEY = "INTEGRATIONS_SECRET_KEY"  # where the credential keys are read from

REF = DefinitionsRef("integrations_app.definitions", "defs")


def _print_run(store: Store, integration_id: int, label: str) -> None:
    run = store.runs_for_integration(integration_id, limit=1)[0]
    counts = run_summary(run)
    print(f"\n== {label}")
    print(f"   sync run {run['id']}: {run['status']}  (Dagster run {run['dagster_run_id']})")
    print(
        f"   items {counts['total']}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; {run['request_count']} API requests"
    )
    print(f"   cursor {json.dumps(run['cursor_before'])} -> {json.dumps(run['cursor_after'])}")
    for item in store.failed_items(integration_id=integration_id)[:5]:
        print(f"   failed item {item['id']} ({item['external_id']}), {item['attempts']} tries: {item['last_error']}")


def main() -> int:
    # Demo-sized retry waits (production keeps the seed's 10 s .. 15 min backoff).
    os.environ.setdefault("INTEGRATIONS_ITEM_BACKOFF", "[0.2, 0.5]")
    os.environ.setdefault("INTEGRATIONS_ITEM_TRIES", "3")
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not os.environ.get(ENV_KEY):  # credentials are encrypted at rest: the demo keeps its own key
        key_file = home / "demo-secret.key"
        if not key_file.exists():
            key_file.write_text(Fernet.generate_key().decode())
            key_file.chmod(0o600)
        os.environ[ENV_KEY] = key_file.read_text().strip()
    store = Store.for_url(SyncSettings().resolved_database_url())
    print(f"DAGSTER_HOME={home}\nintegrations database: {store.url}")
    with DagsterInstance.get() as instance, FakeGitHub(issues=1500, token="demo-token") as fake:
        gh = store.create_integration(
            provider_key="github", name=f"demo: {fake.owner}/{fake.repo} on the local fake GitHub",
            metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"},
            credentials={"token": "demo-token"},
        )
        execute_sync(REF, "github", gh.id, instance=instance, log_level="CRITICAL")
        _print_run(store, gh.id, f"integration {gh.id}: GitHub issues from the fake API at {fake.url}")
        with store.engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(github_issues)).scalar_one()
        print(f"   github_issues now holds {rows} rows")
        bumped = fake.bump(25)
        execute_sync(REF, "github", gh.id, instance=instance, log_level="CRITICAL")
        _print_run(store, gh.id, f"integration {gh.id} again after {len(bumped)} issues changed (incremental)")
        # The fake API stops with the demo: disable the integration so `dagster dev`'s sensor leaves it alone.
        disable_integration(store, gh.id, reason="demo: the fake GitHub API only runs during the demo")

        clean = store.create_integration(provider_key="synthetic", name="demo: 2,000 items", metadata={"items": 2000})
        execute_sync(REF, "synthetic", clean.id, instance=instance, log_level="CRITICAL")
        _print_run(store, clean.id, f"integration {clean.id}: synthetic, 2,000 items")

        poisoned = store.create_integration(
            provider_key="synthetic", name="demo: one poisoned item",
            metadata={"items": 500, "fail_external_ids": ["item-300"]},
        )
        run = execute_sync(REF, "synthetic", poisoned.id, instance=instance, log_level="CRITICAL")
        _print_run(store, poisoned.id, f"integration {poisoned.id}: synthetic, 500 items, item-300 poisoned")
        print(
            f"   Dagster run {run.run_id} ended {run.status.value}: the cursor stopped just before the poisoned item.\n"
            f"   Recover with `integrations skip-sync-item {store.failed_items(integration_id=poisoned.id)[0]['id']}` "
            f"then `integrations advance-cursor {poisoned.id}`,\n"
            "   or fix the listener and re-execute the run from failure in the UI."
        )
    print(f"\nThe CLI needs the demo's key:  export {ENV_KEY}=$(cat {home}/demo-secret.key)")
    print(f"\nSee it in the UI:  DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '.dagster_home')} "
          ".venv/bin/dagster dev -w workspace.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
