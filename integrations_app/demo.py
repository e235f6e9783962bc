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


def poisoned_story(store: Store, instance: DagsterInstance) -> None:
    """A synthetic integration with one poisoned item: a red run, and how to recover it (README)."""
    # A day's interval: `dagster dev`'s sync sensor would otherwise sync it again within minutes (a
    # new red run each time; after the fix, a run that recovers it before the operator does), and the
    # recovery story below is the operator's.
    poisoned = store.create_integration(
        provider_key="synthetic", name="demo: one poisoned item",
        metadata={"items": 500, "fail_external_ids": ["item-300"]}, sync_interval_minutes=24 * 60,
    )
    run = execute_sync(REF, "synthetic", poisoned.id, instance=instance, log_level="CRITICAL")
    _print_run(store, poisoned.id, f"integration {poisoned.id}: synthetic, 500 items, item-300 poisoned")
    print(
        f"   Dagster run {run.run_id} ended {run.status.value}: the cursor stopped just before the poisoned item.\n"
        "   Recover it: fix the listener (delete the two `if event.poisoned: raise ...` lines of\n"
        "   store_synthetic_item in integrations_app/sinks.py; `git checkout integrations_app/sinks.py` puts\n"
        f"   them back), then in the UI open run {run.run_id[:8]} and click Re-execute -> From failure\n"
        f"   (or `.venv/bin/integrations retry {poisoned.id}`); or give the item up with\n"
        f"   `.venv/bin/integrations skip-sync-item {store.failed_items(integration_id=poisoned.id)[0]['id']}`."
    )


def tether_cycle(store: Store, instance: DagsterInstance) -> None:
    """Issue 13: Tether's push -> pull cycle against the local fake Tether server."""
    from integrations_dagster.engine.push import run_sync_result
    from integrations_dagster.store.outbox import Outbox
    from providers.tether import local
    from providers.tether.fake_server import TetherState, serve

    state = TetherState(page_size=2)
    srv = serve(state)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        state.put("task", "42", {"title": "renamed on the server"})  # someone else's edit: server version 1
        state.put("task", "7", {"title": "created on another device"})
        integ = store.create_integration(provider_key="tether", name=f"demo: Tether cycle against {url}",
                                         metadata={"base_url": url})
        # The app's local writes: each updates its own table and records the mutation in ONE transaction.
        local.edit(store, integ.id, "task", "1", {"title": "buy milk"}, operation="create")
        local.edit(store, integ.id, "task", "2", {"title": ""}, operation="create")  # the server refuses it
        local.edit(store, integ.id, "task", "42", {"title": "my rename"}, base_version=0)  # stale: a conflict
        print(f"\n== integration {integ.id}: Tether cycle (push, then pull) against the fake server at {url}")
        print(f"   outbox before: {Outbox(store).counts(integ.id)['pending']} pending mutations")
        execute_sync(REF, "tether", integ.id, instance=instance, log_level="CRITICAL")
        run = store.runs_for_integration(integ.id, limit=1)[0]
        res = run_sync_result(run, Outbox(store).run_rejections(run["id"]))
        print(f"   sync run {run['id']}: {run['status']} (direction {run['direction']}, Dagster run "
              f"{run['dagster_run_id']})")
        print(f"   pushed {res.pushed}, conflicts {res.conflicts}, failed {res.failed}, pulled {res.pulled}, "
              f"pull errors {res.pull_errors}, skipped {res.skipped}")
        for r in res.by_reason("validation_failed"):
            print(f"   rejected {r.entity}:{r.key} (validation_failed): {json.dumps(r.details)}")
        print(f"   validation errors: {json.dumps(res.validation_errors())}")
        for item in store.items_for_run(run["id"]):
            event = item["payload"] or {}
            if event.get("source") == "conflict":
                print(f"   conflict {item['external_id']}: the server's state {json.dumps(event['record'].get('title'))} "
                      f"was applied locally as tracked item {item['id']} ({item['status']}), like a pulled snapshot")
        print(f"   cursor {json.dumps(run['cursor_before'])} -> {json.dumps(run['cursor_after'])} "
              "(the server's microsecond sync cursor)")
        for (entity, key), row in sorted(local.read(store, integ.id).items()):
            print(f"   local {entity}:{key:>3}  {row['data'].get('title')!r:28} version {row['version']}, "
                  f"from {row['source']}")
        counts = Outbox(store).counts(integ.id)
        print(f"   outbox after: {counts['synced']} synced, {counts['failed']} failed, {counts['conflict']} conflict "
              f"(see `integrations list-failed-mutations`; `skip-mutation ID` / `retry-mutation ID`)")
        disable_integration(store, integ.id, reason="demo: the fake Tether server only runs during the demo")
    finally:
        srv.shutdown()
        srv.server_close()


def main(argv: list[str] | None = None) -> int:
    only = (argv if argv is not None else sys.argv[1:])[:1]
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
    if only in (["tether"], ["poisoned"]):  # one part alone: `bash scripts/demo.sh tether|poisoned`
        with DagsterInstance.get() as instance:
            (tether_cycle if only == ["tether"] else poisoned_story)(store, instance)
        return 0
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

        poisoned_story(store, instance)
        tether_cycle(store, instance)
    dagster_home = home.resolve()  # Dagster wants an absolute path
    print(f"\nThe CLI (same database, the demo's key):  export DAGSTER_HOME={dagster_home} "
          f"{ENV_KEY}=$(cat {home}/demo-secret.key); .venv/bin/integrations status")
    print(f"\nSee it in the UI:  DAGSTER_HOME={dagster_home} .venv/bin/dagster dev -w workspace.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
