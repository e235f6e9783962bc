"""``execute_sync`` freezes the process's long-lived objects once (``gc.freeze``), before its first run,
so the collector's full collections during a sync skip Dagster, pydantic and the loaded definitions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import gc
from integrations_dagster.orchestration.in_process import freeze_long_lived_objects
assert gc.get_freeze_count() == 0
freeze_long_lived_objects()
first = gc.get_freeze_count()
assert first > 1000, first  # everything alive at the first call
later = [[i] for i in range(5000)]  # objects made after it
freeze_long_lived_objects()
assert gc.get_freeze_count() == first, (gc.get_freeze_count(), first)  # only the first call freezes
print("ok")
"""


def test_the_first_sync_of_a_process_freezes_what_is_alive_and_only_the_first():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
