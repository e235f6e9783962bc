"""Which due integrations share a batch run, and which get their own run: a pure function.

A sensor tick hands ``plan_tick`` the due integrations in ``(next_sync_at, id)`` order as typed
records (``DueIntegration``); it answers a ``TickPlan``:

- **own run** (the partitioned ``<key>_sync`` job, chunks mapped across steps): a first sync (no
  earlier enumerated run: its size is unknown and usually large), or one whose last enumerated run
  had more than ``big_items`` items;
- **batches** (the unpartitioned ``<key>_sync_batch`` job, one mapped step per integration): every
  other due integration, split into ``ceil(n / batch_size)`` shards of near-equal size (so 201
  integrations make shards of 101 and 100, not 200 and 1). Fewer than ``min_batch`` small
  integrations go to their own runs: a batch of one costs the same run as a partitioned run and
  shows less in the UI.

At most ``max_own_runs`` own runs per tick (each costs a run worker). When that cap is reached the
plan stops at that integration: it and everything after it wait for the next tick (``taken`` says
how many candidates the plan used, so the sensor's cursor resumes after the last one taken).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class DueIntegration:
    """A due integration as the sensor sees it. ``last_items`` is the item count of its last
    enumerated sync run, ``None`` when it never had one (a first sync)."""

    id: int
    next_sync_at: datetime
    last_items: int | None


@dataclass(frozen=True)
class TickPlan:
    own_runs: list[int] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)
    #: how many of the candidates (a prefix, in order) the plan placed
    taken: int = 0

    @property
    def batched(self) -> list[int]:
        return [i for b in self.batches for i in b]


def is_small(due: DueIntegration, *, big_items: int) -> bool:
    """Small: it synced before (its size is known) and its last run had at most ``big_items`` items."""
    return due.last_items is not None and due.last_items <= big_items


def shard(ids: Sequence[int], batch_size: int) -> list[list[int]]:
    """``ids`` in order, cut into ``ceil(len / batch_size)`` consecutive shards whose sizes differ by at
    most one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    n = len(ids)
    if n == 0:
        return []
    count = -(-n // batch_size)
    base, extra = divmod(n, count)
    out: list[list[int]] = []
    start = 0
    for k in range(count):
        size = base + (1 if k < extra else 0)
        out.append(list(ids[start:start + size]))
        start += size
    return out


def plan_tick(
    candidates: Sequence[DueIntegration],
    *,
    batch_size: int,
    big_items: int,
    max_own_runs: int,
    min_batch: int = 2,
) -> TickPlan:
    """Place the due ``candidates`` (see the module docstring). ``batch_size`` 0 turns batching off."""
    if max_own_runs < 0:
        raise ValueError(f"max_own_runs must not be negative, not {max_own_runs}")
    plan = _place(candidates, max_own_runs, batch=lambda c: batch_size > 0 and is_small(c, big_items=big_items))
    if 0 < len(plan.batched) < min_batch:  # too few to be worth a batch run: own runs for all
        plan = _place(candidates, max_own_runs, batch=lambda c: False)
        return plan
    return TickPlan(own_runs=plan.own_runs, batches=shard(plan.batched, batch_size) if plan.batched else [],
                    taken=plan.taken)


def _place(candidates: Sequence[DueIntegration], max_own_runs: int, *, batch) -> TickPlan:  # type: ignore[no-untyped-def]
    own: list[int] = []
    small: list[int] = []
    taken = 0
    for due in candidates:
        if batch(due):
            small.append(due.id)
        elif len(own) >= max_own_runs:
            break  # it and everything after it wait for the next tick
        else:
            own.append(due.id)
        taken += 1
    return TickPlan(own_runs=own, batches=[small] if small else [], taken=taken)


def batch_run_key(members: Sequence[DueIntegration]) -> str:
    """The same shard of the same due times always gives the same run key (a repeated tick launches
    it once); a later due time gives a new one (Dagster's run-key de-duplication is permanent)."""
    text = ",".join(f"{d.id}@{d.next_sync_at.isoformat()}" for d in members)
    first = members[0].id if members else 0
    return f"batch:{first}:{len(members)}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"


# --- a batch step's members: what each one does in this attempt (pure) -----------------------------
START = "start"  #: a new sync run (start_run under single flight, enumerate, chunks, reconcile)
RESUME = "resume"  #: finish the sync run an earlier attempt left (its pending items; reconcile)
REOPEN = "reopen"  #: re-executed from failure: finish the parent's sync run, its failed items reopened
DONE = "done"  #: synced (or skipped by single flight) by this run or an ancestor: nothing to do again
FAILED_BEFORE = "failed_before"  #: its enumeration failed earlier in this run: not retried, reported again


@dataclass(frozen=True)
class PriorSync:
    """The latest sync run of a batch member owned by this Dagster run or one of its ancestors."""

    id: int
    status: str
    enumerated: bool
    chunks: int
    #: owned by the Dagster run executing now (an earlier attempt of this step), not an ancestor
    this_run: bool


def member_action(prior: PriorSync | None, *, first_attempt: bool) -> str:
    """What a member of a batch step does in this attempt, from its latest sync run under this Dagster run
    or an ancestor it was re-executed from (``None``: none).

    - none, or one still ``enumerating`` (a dead attempt; ``start_run`` discards it): ``START``;
    - ``success`` / ``skipped``: ``DONE`` - a re-execution from failure, or a retry of the step, never
      syncs again an integration that already synced in this run group;
    - a discarded enumeration (``failed``, never enumerated): ``FAILED_BEFORE`` when this run made it
      (an enumeration failure is not retried inside a run), ``START`` when an ancestor did;
    - an enumerated run that is not settled for good (``processing``, ``partial``, ``failed``):
      ``REOPEN`` on the first attempt of a step re-executed from an ancestor's run (its failed items get
      their tries again), else ``RESUME`` (a retry continues what is pending, failed items stay failed).
    """
    if prior is None or prior.status == "enumerating":
        return START
    if prior.status in ("success", "skipped"):
        return DONE
    if not prior.enumerated:
        return FAILED_BEFORE if prior.this_run else START
    if first_attempt and not prior.this_run:
        return REOPEN
    return RESUME


def health_checks_unchanged(*, health_before: str | None, last_status_before: str | None, enabled: bool,
                            status: str, failed: int) -> bool:
    """Whether a batch step may leave the integration's two health checks as they were recorded: it was
    healthy, enabled and its last run succeeded (so both checks passed, bar lateness, which the health
    sensor records), and this run succeeded with no failed item. Any other run records both checks (a
    verdict may have changed); so does the health sensor when a verdict changes later (lateness, operator
    actions, older failed items superseded). Saves two Dagster events per clean sync."""
    return (enabled and health_before == "healthy" and last_status_before == "success"
            and status == "success" and failed == 0)
