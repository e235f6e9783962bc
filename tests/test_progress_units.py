"""Pure pieces of the CLI's progress display and the store's migration fast path."""

from __future__ import annotations

import io

from integrations_dagster.operations.progress import PlainReporter, Sample, format_rate, phase_of, rate
from integrations_dagster.store.progress import RunCounts
from integrations_dagster.store.revisions import at_head, head_revisions


def counts(status: str, **items: int) -> RunCounts:
    return RunCounts(sync_run_id=7, status=status, chunks=2, items=dict(items))


def test_phases_rates_and_plain_lines():
    assert phase_of(None) == "starting"
    assert phase_of(counts("enumerating")) == "enumerating"
    assert phase_of(counts("processing", pending=5)) == "processing"
    assert phase_of(counts("failed", failed=1)) == "finished"
    c = counts("processing", pending=60, success=30, failed=10)
    assert (c.dispatched, c.processed, c.failed) == (100, 40, 10)
    samples = [Sample(0.0, counts("processing", pending=100)), Sample(2.0, c)]
    assert rate(samples) == 20.0
    assert rate(samples[:1]) is None and format_rate(None) == "-" and format_rate(1234.4) == "1,234 items/s"

    out = io.StringIO()
    rep = PlainReporter(out, heartbeat=1000)
    rep.start("syncing x")
    rep.update(Sample(0.5, counts("enumerating")))
    rep.update(Sample(1.0, counts("processing", pending=100)))
    rep.update(Sample(1.5, counts("processing", pending=50, success=50)))  # same phase: no new line
    rep.finish(Sample(2.0, counts("success", success=100)))
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(":")[0] for line in lines] == [
        "starting", "enumerating", "processing", "finished"]
    assert "100 of 100 items processed, 0 failed" in lines[-1]


def test_at_head_matches_a_migrated_store(store):
    heads = head_revisions()
    assert heads
    with store.engine.connect() as conn:
        assert at_head(conn)
