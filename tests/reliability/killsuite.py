"""The kill -9 suite (issue 9, "the proof"): real ``integrations sync ID --wait`` subprocesses running the
real Dagster job, SIGKILLed (whole process group) at a random moment, then recovered as an operator
would: run ``integrations sync ID --wait`` again (the documented command, docs/OPERATIONS.md).

One trial:
1. a fresh integration of ``ITEMS`` synthetic items (chunks of 10), a fresh DAGSTER_HOME;
2. start the sync, SIGKILL its process group after a random delay in [0, ``max_delay``);
3. the phase is the sync run's status in our store when it died (``startup`` = no run yet);
4. check: the cursor never passed an item that was not delivered, and never moved backwards;
5. recover: ``integrations sync ID --wait`` (up to 3 times); check every item delivered at least
   once and the cursor at the provider maximum; record the recovery wall time.

Long mode (table in docs/RELIABILITY.md)::

    nice -n 10 .venv/bin/python -m tests.reliability.killsuite --db sqlite --trials 200 --out kills-sqlite.jsonl
    .venv/bin/python -m tests.reliability.killsuite --table kills-sqlite.jsonl kills-pg.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 40


def checkpoint_index(cursor: str | None) -> int:
    return -1 if cursor is None else int(cursor)


@dataclass
class Trial:
    db: str
    seed: int
    delay: float
    phase: str = "?"
    cursor_after_kill: int = -1
    recovery_runs: int = 0
    recovery_seconds: float = 0.0
    deliveries: int = 0
    violations: list[str] = field(default_factory=list)
    #: The last lines of each recovery run that did not end successful (why recovery took more runs).
    recovery_errors: list[str] = field(default_factory=list)


def phase_of(store, run) -> str:  # type: ignore[no-untyped-def]
    """Where the kill landed, from our store: no sync run yet, enumerating, processing (mid-chunk when
    the items settled so far are not a whole number of chunks of 10, else between chunks), finished."""
    if run is None:
        return "startup"
    if run["status"] != "processing":
        return "finished" if run["status"] in ("success", "partial") else str(run["status"])
    settled = sum(1 for it in store.items_for_run(run["id"]) if it["status"] != "pending")
    return "processing, mid-chunk" if settled % 10 else "processing, between chunks"


def _env(db_url: str, home: Path, log: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INTEGRATIONS_DATABASE_URL": db_url, "DAGSTER_HOME": str(home),
           "INTEGRATIONS_DEFINITIONS": "tests.support.kill_app:defs", "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS": "1",
           "DAGSTER_DISABLE_TELEMETRY": "yes", "KILL_APP_LOG": str(log), "KILL_APP_DELAY": "0.02"}
    env.pop("INTEGRATIONS_TENANT", None)
    return env


#: Where a targeted kill aims (``--targeted``): the moment it waits for, then a small random delay.
#: ``operator``: a first sync ends partial (every item 2 modulo 4 fails), the listener is fixed, and the
#: kill lands in the operator's recovery verb (``retry``: re-execution from failure, or
#: ``advance-cursor``) instead of in the sync.
TARGETS = ("startup", "enumerating", "processing", "settling", "operator")
OPERATOR_VERBS = ("retry", "advance-cursor")


def _reached(target: str, store: Any, integration_id: int, log: Path, k: int) -> bool:
    if target == "startup":
        return True
    if target == "enumerating":
        return bool(store.runs_for_integration(integration_id, limit=1))
    delivered = len(log.read_text().split())
    return delivered >= (k if target == "processing" else ITEMS)


def run_trial(db_url: str, db: str, seed: int, workdir: Path, max_delay: float, *, targeted: bool = False,
              extra_env: dict[str, str] | None = None) -> Trial:
    """One trial. ``targeted``: instead of a delay from the start (where a loaded machine puts most
    kills in start-up), aim at a phase chosen at random: start-up (a delay in [0, 3) s), the sync
    run's first appearance (enumeration), the k-th delivery (k random: mid-chunk or between chunks),
    or the last delivery (reconcile and teardown), then a random delay of up to 0.2 s; or an operator
    action (``retry`` or ``advance-cursor`` after a partial sync, see ``TARGETS``)."""
    from integrations_dagster.store import Store

    rng = random.Random(seed)
    target = rng.choice(TARGETS) if targeted else ""
    k = rng.randint(1, ITEMS - 1)
    delay = rng.uniform(0, 3.0) if target == "startup" else rng.uniform(0, 0.2) if targeted else rng.uniform(0, max_delay)
    trial = Trial(db=db, seed=seed, delay=round(delay, 3))
    script = Path(sys.executable).parent / "integrations"
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    log = workdir / "delivered.txt"
    log.touch()
    store = Store.for_url(db_url)
    integ = store.create_integration(provider_key="synthetic", name=f"kill-{seed}", metadata={"items": ITEMS})
    env = _env(db_url, home, log) | (extra_env or {})
    command = [str(script), "sync", str(integ.id), "--wait"]
    if target == "operator":
        verb = rng.choice(OPERATOR_VERBS)
        fail = workdir / "listener-broken"
        fail.touch()
        env["KILL_APP_FAIL"] = str(fail)
        first = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=300,
                               start_new_session=True)
        cursor = checkpoint_index(store.get_integration(integ.id).cursor)
        if first.returncode == 0 or cursor != 1:
            trial.violations.append(f"operator trial: the failing sync ended rc={first.returncode} with cursor "
                                    f"{cursor} (expected partial, held at 1 by item 2)")
        fail.unlink()  # the listener is fixed; the operator recovers
        command = [str(script), verb, str(integ.id)]
        # retry: half the kills after the k-th redelivery of a failed item (10 of them), the rest in its
        # start-up; advance-cursor: anywhere in its first 3 s.
        aim_delivery = verb == "retry" and rng.random() < 0.5
        k = len(log.read_text().split()) + rng.randint(1, 9)
        trial.delay = round(rng.uniform(0, 0.2) if aim_delivery else rng.uniform(0, 3.0), 3)

    proc = subprocess.Popen(command, env=env, cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if target == "operator":
        deadline = time.monotonic() + 120
        while aim_delivery and len(log.read_text().split()) < k and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    elif targeted:
        deadline = time.monotonic() + 120
        while not _reached(target, store, integ.id, log, k) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    time.sleep(trial.delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    runs = store.runs_for_integration(integ.id, limit=1)
    trial.phase = phase_of(store, runs[0] if runs else None)
    if proc.returncode == 0:
        trial.phase = "finished"
    if target == "operator":
        trial.phase = f"operator {command[1]}" + (", finished" if proc.returncode == 0 else "")
    cursor = checkpoint_index(store.get_integration(integ.id).cursor)
    trial.cursor_after_kill = cursor
    delivered = set(log.read_text().split())
    missing = [i for i in range(cursor + 1) if f"item-{i}" not in delivered]
    if missing:
        trial.violations.append(f"cursor {cursor} passed undelivered items {missing[:5]}")
    if target == "operator" and cursor < 1:
        trial.violations.append(f"cursor went backwards in the operator action: 1 -> {cursor}")

    started = time.monotonic()
    last = cursor
    for attempt in range(3):
        trial.recovery_runs = attempt + 1
        again = subprocess.run([str(script), "sync", str(integ.id), "--wait"], env=env, cwd=workdir,
                               capture_output=True, text=True, timeout=300, start_new_session=True)
        now = checkpoint_index(store.get_integration(integ.id).cursor)
        if now < last:
            trial.violations.append(f"cursor went backwards {last} -> {now}")
        last = now
        if again.returncode == 0 and now == ITEMS - 1:
            break
        tail = (again.stdout + again.stderr).strip().splitlines()[-12:]
        trial.recovery_errors.append(f"rc={again.returncode}: " + "\n".join(tail))
    trial.recovery_seconds = round(time.monotonic() - started, 2)
    counts = Counter(log.read_text().split())
    trial.deliveries = sum(counts.values())
    lost = [i for i in range(ITEMS) if counts[f"item-{i}"] == 0]
    if lost:
        trial.violations.append(f"items never delivered after recovery: {lost[:5]}")
    if last != ITEMS - 1:
        trial.violations.append(f"cursor {last} not at the provider maximum {ITEMS - 1} after 3 recovery runs")
    return trial


def fresh_database(db: str, pg_url: str, workdir: Path) -> str:
    """An empty state database for a long run: ``pg_url``'s database dropped and created again, or a
    new SQLite file in ``workdir``."""
    if db != "postgres":
        return f"sqlite:///{workdir}/integrations.sqlite"
    import psycopg

    base, name = pg_url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return pg_url


def table(trials: list[dict]) -> str:
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for t in trials:
        by[(t["db"], t["phase"])].append(t)
    lines = ["| DB | phase at kill | trials | violations | recovery runs (max) | recovery s (median / max) "
             "| deliveries per item (mean) |", "|---|---|---|---|---|---|---|"]
    for (db, phase), ts in sorted(by.items()):
        secs = sorted(t["recovery_seconds"] for t in ts)
        lines.append(f"| {db} | {phase} | {len(ts)} | {sum(bool(t['violations']) for t in ts)} | "
                     f"{max(t['recovery_runs'] for t in ts)} | {secs[len(secs) // 2]:.1f} / {secs[-1]:.1f} | "
                     f"{sum(t['deliveries'] for t in ts) / len(ts) / ITEMS:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/kill_long")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--max-delay", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out")
    ap.add_argument("--targeted", action="store_true", help="aim each kill at a phase chosen at random")
    ap.add_argument("--table", nargs="*")
    args = ap.parse_args()
    if args.table is not None:
        trials = [json.loads(line) for f in args.table for line in Path(f).read_text().splitlines() if line]
        print(table(trials))
        return
    with tempfile.TemporaryDirectory(prefix="killsuite-") as tmp:
        url = fresh_database(args.db, args.pg_url, Path(tmp))
        for n in range(args.trials):
            t = run_trial(url, args.db, args.seed + n, Path(tmp) / f"t{n}", args.max_delay, targeted=args.targeted)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(asdict(t)) + "\n")
            print(t, flush=True)


if __name__ == "__main__":
    main()
