"""Benchmark: one sync-sensor tick over 1,000 and 10,000 integrations (10% due) on PostgreSQL.

    .venv/bin/python bench/scheduler.py [--sizes 1000 10000] [--repeat 5] [--pg postgresql://postgres@127.0.0.1:5432]

Creates (and drops at the end) two databases on the server: ``bench_sched`` for the integrations
store and ``bench_sched_dagster`` for the Dagster instance's storage, so both sides of a tick talk
to PostgreSQL. For each size it measures, with the steady state of a running deployment (every
integration already has its dynamic partition; three finished sync runs of history per integration):

- the real sensor tick (``sensor.evaluate_tick``) with the per-tick cap at its default (100) and at
  1,000 (every due integration requested in one tick);
- a naive tick as a baseline: load every integration of the provider into Python, filter the due
  ones there, and check each one for an in-flight run with its own Dagster query and sync_runs query
  (the seed's per-integration preflight), then mark it; also its first half alone (load + filter).

Queries are counted with a SQLAlchemy ``before_cursor_execute`` listener on every engine (ours and
Dagster's), split by database. An ``executemany`` (the claim UPDATE) counts as one statement.
Each figure is the median of ``--repeat`` ticks; the due integrations are reset between ticks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from dagster import DagsterInstance, RunRequest, RunsFilter, build_sensor_context  # noqa: E402
from sqlalchemy import event, select, text, update  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from integrations_dagster import Store, SyncSettings, build_definitions  # noqa: E402
from integrations_dagster.orchestration.code_location import engine_of  # noqa: E402
from integrations_dagster.orchestration.definitions import ALIVE_STATUSES, INTEGRATION_TAG, PROVIDER_TAG, TRIGGER_TAG  # noqa: E402
from integrations_dagster.orchestration.sensors import run_key_for  # noqa: E402
from integrations_dagster.store import models as m  # noqa: E402
from integrations_dagster.store.store import RUN_IN_FLIGHT  # noqa: E402
from providers.synthetic import SyntheticProvider  # noqa: E402

STORE_DB = "bench_sched"
DAGSTER_DB = "bench_sched_dagster"
NOW = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)

COUNTS: Counter[str] = Counter()


@event.listens_for(Engine, "before_cursor_execute")
def _count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    COUNTS[conn.engine.url.database or "?"] += 1


def admin(pg: str) -> psycopg.Connection:
    return psycopg.connect(f"{pg}/postgres", autocommit=True)


def recreate(pg: str) -> None:
    with admin(pg) as conn:
        for name in (STORE_DB, DAGSTER_DB):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop(pg: str) -> None:
    with admin(pg) as conn:
        for name in (STORE_DB, DAGSTER_DB):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def populate(store: Store, instance: DagsterInstance, n: int) -> list[int]:
    """``n`` synthetic integrations, every tenth due; three finished sync runs each; partitions present."""
    with store.begin() as conn:
        conn.execute(text("TRUNCATE sync_items, sync_runs, integrations RESTART IDENTITY CASCADE"))
        rows = []
        for k in range(n):
            due = k % 10 == 0
            rows.append(dict(
                tenant="default", provider_key="synthetic", name=f"bench {k}", metadata={"items": 1},
                credentials=None, sync_interval_minutes=5, enabled=True, health="healthy",
                next_sync_at=NOW - timedelta(seconds=k) if due else NOW + timedelta(minutes=1 + k % 60),
                consecutive_failures=0, consecutive_auth_failures=0, created_at=NOW, updated_at=NOW,
            ))
        conn.execute(m.integrations.insert(), rows)
        ids = list(conn.execute(select(m.integrations.c.id).order_by(m.integrations.c.id)).scalars())
        history = [dict(integration_id=i, status="success", trigger="schedule", started_at=NOW - timedelta(hours=h),
                        finished_at=NOW - timedelta(hours=h) + timedelta(seconds=5))
                   for i in ids for h in (1, 2, 3)]
        conn.execute(m.sync_runs.insert(), history)
        conn.execute(text("ANALYZE integrations; ANALYZE sync_runs"))
    existing = set(instance.get_dynamic_partitions("synthetic_integrations"))
    instance.add_dynamic_partitions("synthetic_integrations", [str(i) for i in ids if str(i) not in existing])
    stale = existing - {str(i) for i in ids}
    for key in stale:
        instance.delete_dynamic_partition("synthetic_integrations", key)
    return [i for k, i in enumerate(ids) if k % 10 == 0]


def reset_due(store: Store, due_ids: list[int]) -> None:
    with store.begin() as conn:
        conn.execute(text("UPDATE integrations SET next_sync_at = :now - (id || ' seconds')::interval "
                          "WHERE id = ANY(:ids)"), {"now": NOW, "ids": due_ids})


def measure(fn: Any, store: Store, due_ids: list[int], repeat: int) -> tuple[float, dict[str, int], int]:
    times, counts, requested = [], [], 0
    for _ in range(repeat):
        reset_due(store, due_ids)
        COUNTS.clear()
        t = time.perf_counter()
        requested = fn()
        times.append(time.perf_counter() - t)
        counts.append(dict(COUNTS))
    return statistics.median(times), counts[-1], requested


def naive_tick(store: Store, instance: DagsterInstance) -> int:
    """The baseline: every integration into Python, then one in-flight check per due integration."""
    integrations = store.list_integrations(provider_key="synthetic")
    due = [i for i in integrations if i.enabled and i.health != "disabled" and i.next_sync_at is not None
           and i.next_sync_at <= NOW]
    requests = []
    with store.engine.connect() as conn:
        for integ in due:
            busy = instance.get_runs(RunsFilter(job_name="synthetic_sync", tags={"dagster/partition": str(integ.id)},
                                                statuses=list(ALIVE_STATUSES)), limit=1)
            busy = busy or conn.execute(select(m.sync_runs.c.id).where(
                m.sync_runs.c.integration_id == integ.id, m.sync_runs.c.status.in_(RUN_IN_FLIGHT))).first()
            if busy:
                continue
            requests.append(RunRequest(partition_key=str(integ.id), run_key=run_key_for(integ.id, integ.next_sync_at),
                                       tags={PROVIDER_TAG: "synthetic", INTEGRATION_TAG: str(integ.id),
                                             TRIGGER_TAG: "schedule"}))
            conn.execute(update(m.integrations).where(m.integrations.c.id == integ.id)
                         .values(next_sync_at=NOW + timedelta(minutes=5)))
        conn.commit()
    return len(requests)


def load_and_filter(store: Store) -> int:
    """Only the first half of the naive tick: every integration into Python, filtered there."""
    integrations = store.list_integrations(provider_key="synthetic")
    return len([i for i in integrations if i.enabled and i.health != "disabled" and i.next_sync_at is not None
                and i.next_sync_at <= NOW])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()

    recreate(args.pg)
    store_url = f"{args.pg}/{STORE_DB}"
    rows: list[tuple[Any, ...]] = []
    # Definitions are built before any instance is opened (Dagster ties their load context to one).
    all_defs = {}
    for cap in (100, 1000):
        all_defs[cap] = build_definitions(
            providers=[SyntheticProvider()], listeners=[], operator_jobs=False,
            settings=SyncSettings(database_url=store_url, sensor_max_runs_per_tick=cap),
        )
        engine_of(all_defs[cap]).clock = lambda: NOW
    try:
        store = Store.for_url(store_url)
        with tempfile.TemporaryDirectory() as home:
            Path(home, "dagster.yaml").write_text(
                f"storage:\n  postgres:\n    postgres_url: {args.pg}/{DAGSTER_DB}\ntelemetry:\n  enabled: false\n"
            )
            with DagsterInstance.from_config(home) as instance:
                for n in args.sizes:
                    due_ids = populate(store, instance, n)
                    for cap in (100, 1000):
                        defs = all_defs[cap]
                        sensor = defs.resolve_sensor_def("synthetic_sync_sensor")

                        def real_tick() -> int:
                            ctx = build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                                       resources=defs.resources)
                            return len(sensor.evaluate_tick(ctx).run_requests or [])

                        real_tick()  # warm-up: imports, connection pools
                        secs, counts, requested = measure(real_tick, store, due_ids, args.repeat)
                        rows.append((n, f"sensor tick, cap {cap}", requested, secs, counts.get(STORE_DB, 0),
                                     counts.get(DAGSTER_DB, 0)))
                    secs, counts, requested = measure(lambda: load_and_filter(store), store, due_ids, args.repeat)
                    rows.append((n, "naive, first half only: load all + filter (due found)", requested, secs,
                                 counts.get(STORE_DB, 0), counts.get(DAGSTER_DB, 0)))
                    secs, counts, requested = measure(lambda: naive_tick(store, instance), store, due_ids,
                                                      max(1, min(args.repeat, 3)))
                    rows.append((n, "naive: load all, check each", requested, secs, counts.get(STORE_DB, 0),
                                 counts.get(DAGSTER_DB, 0)))
    finally:
        Store.forget_all()
        if not args.keep:
            drop(args.pg)

    print(f"\nOne tick of synthetic_sync_sensor, PostgreSQL, 10% due, median of {args.repeat} "
          f"(naive: of {max(1, min(args.repeat, 3))})\n")
    print("| integrations | approach | runs requested | tick wall time | queries (our DB) | queries (Dagster DB) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n, name, requested, secs, ours, dag in rows:
        print(f"| {n:,} | {name} | {requested:,} | {secs * 1000:,.0f} ms | {ours:,} | {dag:,} |")


if __name__ == "__main__":
    main()
