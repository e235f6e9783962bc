"""Kill -9 suite, short mode (CI): ``INTEGRATIONS_KILL_TRIALS`` trials per database (default 3; the long
mode is ``python -m tests.reliability.killsuite``, see docs/RELIABILITY.md; scripts/test.sh sets 20). Each trial SIGKILLs a real
``integrations sync ID --wait`` process group at a seeded random moment, checks the cursor never passed
undelivered work, recovers with the documented command and checks every item delivered and the cursor
at the maximum."""

from __future__ import annotations

import os

import pytest

from tests.reliability.killsuite import run_trial

TRIALS = int(os.environ.get("INTEGRATIONS_KILL_TRIALS", "3"))


@pytest.mark.kill9
@pytest.mark.parametrize("n", range(TRIALS))
def test_kill9_trial(db_url, tmp_path, n):
    db = "sqlite" if db_url.startswith("sqlite") else "postgres"
    trial = run_trial(db_url, db, seed=7000 + n, workdir=tmp_path / "trial", max_delay=10.0, targeted=True)
    assert trial.violations == [], trial


#: A staged listener, and a write every 10 items (a chunk): on PostgreSQL the chunks are pipelined,
#: processed while the enumeration still runs (``engine.pipeline``), so kills land inside them too.
PIPELINED = {"KILL_APP_STAGED": "1", "INTEGRATIONS_FLUSH_EVERY": "10", "INTEGRATIONS_PIPELINE_CHUNKS": "true"}


@pytest.mark.kill9
@pytest.mark.parametrize("n", range(TRIALS))
def test_kill9_trial_pipelined_chunks(pg_store, pg_url, tmp_path, n):
    trial = run_trial(pg_url, "postgres", seed=7500 + n, workdir=tmp_path / "trial", max_delay=10.0, targeted=True,
                      extra_env=PIPELINED)
    assert trial.violations == [], trial
