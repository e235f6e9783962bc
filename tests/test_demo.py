"""The README's recovery story for the demo's poisoned integration (issue 12, "Done when"): the demo
prints how to recover it, the README names code that exists, and `dagster dev`'s sync sensor leaves the
integration to the operator (it is not due again for a day)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from integrations_dagster import Store

ROOT = Path(__file__).resolve().parents[1]


def test_the_poisoned_demo_prints_the_recovery_and_is_left_to_the_operator(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "yes", "PYTHONPATH": str(ROOT)}
    env.pop("INTEGRATIONS_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "integrations_app.demo", "poisoned"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "items 500: 499 succeeded, 1 failed" in text and "ended FAILURE" in text
    assert "Re-execute -> From failure" in text and "`.venv/bin/integrations retry 1`" in text
    assert "BetaWarning" not in out.stderr  # Dagster's note about its own sensor copies is filtered
    # the fix the README and the demo describe is in the code they name
    sinks = (ROOT / "integrations_app" / "sinks.py").read_text()
    assert "    if event.poisoned:\n        raise ValueError(" in sinks
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster dev -w workspace.yaml`" in readme
    assert "`if event.poisoned: raise ...`" in readme and "**Re-execute → From failure**" in readme
    # not due for a day: the sync sensor does not re-run (or silently recover) it during the story
    store = Store.for_url(f"sqlite:///{home / 'integrations.sqlite'}")
    integ = store.get_integration(1, decrypt=False)
    assert integ.next_sync_at is not None
    due = integ.next_sync_at if integ.next_sync_at.tzinfo else integ.next_sync_at.replace(tzinfo=UTC)
    assert due - datetime.now(UTC) > timedelta(hours=12)
