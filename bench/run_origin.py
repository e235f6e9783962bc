"""Benchmark: what it costs that every run carries its code location's origin (UI re-execution).

    .venv/bin/python bench/run_origin.py [--repeat 3]

SQLite instance and database in a temporary folder; the project's code location
(``integrations_app.definitions``, ``workspace.yaml``). Prints medians of ``--repeat``:

- a 100-item synthetic sync executed in this process, before (``execute_job(reconstructable)``,
  no origin) and after (``execute_sync``, which creates the run with the workspace origin), CPU
  seconds of this process (wall time is dominated by the other load on a shared machine);
- ``job_origin()`` alone (parse workspace.yaml, build the origin), milliseconds;
- queuing a sync run for the daemon: in this process (``submit_run_to_queue``) and with
  ``dagster job launch -w workspace.yaml`` (the previous way, still the fallback), wall seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-origin-"))
    (tmp / "home").mkdir()
    os.environ["DAGSTER_HOME"] = str(tmp / "home")
    os.environ["INTEGRATIONS_DATABASE_URL"] = f"sqlite:///{tmp}/integrations.sqlite"
    import yaml
    from dagster import execute_job, instance_for_test

    from integrations_dagster import DefinitionsRef, Store, execute_sync
    from integrations_dagster.orchestration.reexecutable import job_origin
    from integrations_dagster.orchestration.in_process import _console, ensure_partition, sync_tags
    from integrations_dagster.orchestration.request import submit_to_queue

    ref = DefinitionsRef("integrations_app.definitions", "defs")
    store = Store.for_url(os.environ["INTEGRATIONS_DATABASE_URL"])

    def before(instance, iid):  # type: ignore[no-untyped-def]
        ensure_partition(instance, "synthetic", iid)
        with execute_job(ref.reconstructable_job("synthetic_sync"), instance=instance,
                         tags=sync_tags("synthetic", iid, "manual"), run_config=_console("ERROR"),
                         raise_on_error=False) as result:
            return result.dagster_run

    def after(instance, iid):  # type: ignore[no-untyped-def]
        return execute_sync(ref, "synthetic", iid, instance=instance, log_level="ERROR")

    cpu: dict[str, list[float]] = {"before": [], "after": []}
    queue: dict[str, list[float]] = {"in-process": [], "dagster job launch": []}
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with instance_for_test(overrides={"run_coordinator": config["run_coordinator"]},
                           temp_dir=str(tmp / "home")) as instance:
        after(instance, store.create_integration(provider_key="synthetic", name="warm-up", metadata={"items": 100}).id)
        for i in range(args.repeat):
            for label, fn in (("before", before), ("after", after)):
                iid = store.create_integration(provider_key="synthetic", name=f"{label}{i}", metadata={"items": 100}).id
                t = time.process_time()
                run = fn(instance, iid)
                cpu[label].append(time.process_time() - t)
                assert run.status.value == "SUCCESS", run.status
        origin_ms = []
        for _ in range(20):
            t = time.perf_counter()
            job_origin(ref, "synthetic_sync")
            origin_ms.append((time.perf_counter() - t) * 1000)
        not_in_workspace = DefinitionsRef("no_such_module_in_the_workspace", "defs")
        for i in range(args.repeat):
            for label, r in (("in-process", ref), ("dagster job launch", not_in_workspace)):
                t = time.perf_counter()
                submit_to_queue(instance=instance, provider_key="synthetic", integration_id=10_000 + 2 * i + len(label),
                                workspace=ROOT / "workspace.yaml", definitions_ref=r)
                queue[label].append(time.perf_counter() - t)
    med = statistics.median
    print(f"100-item sync in this process, CPU s: before {med(cpu['before']):.2f}, after {med(cpu['after']):.2f}")
    print(f"job_origin(): {med(origin_ms):.1f} ms")
    print(f"queue a run for the daemon, wall s: in-process {med(queue['in-process']):.2f}, "
          f"dagster job launch {med(queue['dagster job launch']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
