"""``InProcessComputeLogManager`` (our dagster.yaml's compute-log manager): a run's stdout and stderr land
in the files the UI reads and still reach the terminal, with no helper process per run and nothing lost
at the end. Each case runs in a fresh interpreter whose stdout and stderr are pipes this test reads,
so the descriptors are the real ones (not pytest's capture)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    out = tmp_path / "result.json"
    code = textwrap.dedent(script).replace("RESULT", repr(str(out))).replace("BASE", repr(str(tmp_path / "logs")))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


CAPTURE = """
import json, os, subprocess, sys
from pathlib import Path
from integrations_dagster.orchestration.compute_logs import InProcessComputeLogManager
from dagster._core.storage.compute_log_manager import ComputeIOType

def children():
    pid = os.getpid()
    return sorted(int(c) for t in os.listdir(f"/proc/{pid}/task")
                  for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split())

manager = InProcessComputeLogManager(BASE)
key = ["run-1", "compute_logs", "abc"]
print("before the capture", flush=True)
with manager.capture_logs(key):
    during = children()
    print("from python stdout")
    print("from python stderr", file=sys.stderr)
    subprocess.run(["sh", "-c", "echo from a child process; echo child stderr >&2"], check=True)
    for i in range(2000):  # the last lines right before the end must not be lost
        print(f"line {i}")
after = children()
print("after the capture", flush=True)
out = manager.get_log_data_for_type(key, ComputeIOType.STDOUT, 0, None)[0].decode()
err = manager.get_log_data_for_type(key, ComputeIOType.STDERR, 0, None)[0].decode()
json.dump({"during": during, "after": after, "out": out, "err": err, "complete": manager.is_capture_complete(key)},
          open(RESULT, "w"))
"""


def test_capture_writes_the_files_the_ui_reads_and_mirrors_everything_to_the_terminal(tmp_path: Path) -> None:
    proc, res = _run(CAPTURE, tmp_path)
    for text in ("from python stdout", "from a child process", "line 0", "line 1999"):
        assert text in res["out"]
        assert text in proc.stdout  # mirrored to the original stdout
    assert "from python stderr" in res["err"] and "child stderr" in res["err"]
    assert "from python stderr" in proc.stderr and "child stderr" in proc.stderr
    assert proc.stdout.count("line 1999") == 1  # mirrored once
    assert "before the capture" not in res["out"] and "after the capture" not in res["out"]
    assert proc.stdout.index("before the capture") < proc.stdout.index("line 0") < proc.stdout.index("after the capture")
    assert res["complete"]


def test_capture_starts_no_process(tmp_path: Path) -> None:
    """Dagster's LocalComputeLogManager starts a ``tail`` and a watcher process per stream for every capture."""
    _, res = _run(CAPTURE, tmp_path)
    assert res["during"] == [] and res["after"] == []


def test_a_stream_shared_by_stdout_and_stderr_is_captured(tmp_path: Path) -> None:
    """The CLI's ``--wait`` points both at one temporary file (operations.progress.quiet_run_output): the
    capture of the second must not break on the first's redirection (it did: ``Illegal seek``)."""
    script = """
    import json, sys, tempfile
    from integrations_dagster.orchestration.compute_logs import InProcessComputeLogManager
    from dagster._core.storage.compute_log_manager import ComputeIOType
    sink = tempfile.TemporaryFile("w+")
    sys.stdout = sys.stderr = sink
    manager = InProcessComputeLogManager(BASE)
    key = ["run-2", "compute_logs", "abc"]
    with manager.capture_logs(key):
        print("shared stream line")
    sink.flush(); sink.seek(0)
    kept = sink.read()
    logs = (manager.get_log_data_for_type(key, ComputeIOType.STDOUT, 0, None)[0] or b"").decode() + \\
           (manager.get_log_data_for_type(key, ComputeIOType.STDERR, 0, None)[0] or b"").decode()
    sys.stdout = sys.__stdout__
    json.dump({"kept": kept, "logs": logs}, open(RESULT, "w"))
    """
    _, res = _run(script, tmp_path)
    assert "shared stream line" in res["logs"]
    assert "shared stream line" in res["kept"]


def test_a_run_on_an_instance_configured_with_it_keeps_its_step_output(tmp_path: Path) -> None:
    """Through dagster.yaml, as the project ships it: the run's stdout is in the run's captured logs."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    script = f"""
    import json, os
    os.environ["DAGSTER_HOME"] = {str(home)!r}
    from dagster import DagsterInstance, DagsterEventType, execute_job, reconstructable
    from integrations_dagster.orchestration.compute_logs import InProcessComputeLogManager
    from tests.support.print_job import printing_job
    instance = DagsterInstance.get()
    assert isinstance(instance.compute_log_manager, InProcessComputeLogManager)
    result = execute_job(reconstructable(printing_job), instance=instance)
    [captured] = instance.all_logs(result.run_id, of_type=DagsterEventType.LOGS_CAPTURED)
    key = instance.compute_log_manager.build_log_key_for_run(result.run_id,
                                                             captured.dagster_event.logs_captured_data.file_key)
    data = instance.compute_log_manager.get_log_data(key)
    json.dump({{"success": result.success, "out": (data.stdout or b"").decode()}}, open(RESULT, "w"))
    """
    proc, res = _run(script, tmp_path)
    assert res["success"]
    assert "printed by an op" in res["out"]
    assert "printed by an op" in proc.stdout
