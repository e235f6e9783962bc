"""Two workers at once on PostgreSQL (issue 9, the proof): two processes starting the same integration
create one run; two processes processing the same chunk of one run never deliver an item twice and
never overlap on the chunk (the chunk's advisory lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster import SyncSettings
from integrations_dagster.engine.engine import SyncEngine
from providers.synthetic import SyntheticProvider

ROOT = Path(__file__).resolve().parents[2]


def _workers(args_list: list[list[str]], go: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.two_workers", *a], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in args_list]
    time.sleep(2.5)  # both imported and polling for the go file
    go.touch()
    out = []
    for p in procs:
        o, e = p.communicate(timeout=120)
        assert p.returncode == 0, e[-3000:]
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def test_two_processes_starting_one_integration_create_one_run(pg_store, pg_url, tmp_path):
    for round_ in range(3):
        integ = pg_store.create_integration(provider_key="synthetic", name=f"two-{round_}", metadata={"items": 5})
        go = tmp_path / f"go{round_}"
        outs = _workers([[pg_url, str(integ.id), "start", str(tmp_path / "log"), str(go)]] * 2, go)
        answers = sorted(o.stdout.strip() for o in outs)
        assert answers[1] == "skipped" and answers[0].isdigit(), answers
        runs = pg_store.runs_for_integration(integ.id, limit=10)
        assert [r["status"] for r in runs if r["status"] != "skipped"] == ["enumerating"]  # 0 duplicate runs


def test_two_processes_on_one_chunk_deliver_each_item_once(pg_store, pg_url, tmp_path):
    integ = pg_store.create_integration(provider_key="synthetic", name="two-chunk", metadata={"items": 20})
    engine = SyncEngine(providers=[SyntheticProvider()], listeners=ListenerRegistry.build([]),
                        settings=SyncSettings(database_url=None, chunk_size=20, item_tries=1))
    start = engine.start_run(pg_store, integ.id, dagster_run_id=None)
    assert engine.enumerate(pg_store, pg_store.get_integration(integ.id), start.run_id).chunks == 1
    log = tmp_path / "log"
    go = tmp_path / "go"
    _workers([[pg_url, str(integ.id), "chunk", str(log), str(go), str(start.run_id), "0"]] * 2, go)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert Counter(r[1] for r in rows) == Counter({f"item-{i}": 1 for i in range(20)})  # 0 delivered twice
    spans: dict[str, tuple[float, float]] = {}
    for pid, _ext, begin, end in rows:
        lo, hi = spans.get(pid, (float(begin), float(end)))
        spans[pid] = (min(lo, float(begin)), max(hi, float(end)))
    if len(spans) == 2:  # the second worker got the chunk only after the first let it go
        (a0, a1), (b0, b1) = sorted(spans.values())
        assert a1 <= b0
    engine.reconcile(pg_store, start.run_id)
    assert pg_store.get_integration(integ.id).cursor == "00000019"
