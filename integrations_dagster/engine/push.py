"""Push direction (issue 13, Tether's push cycle): typed records and pure decisions.

A provider that supports push implements ``push(integration, batch) -> list[PushOutcome]`` (the
issue's signature) or ``push(integration, batch, session)`` (the run's ``SyncSession``, for
``session.http``), with one outcome per mutation of the batch; ``push_caller`` calls either.
``decide`` maps an outcome to the mutation's next state; the SQL lives in ``store/outbox.py`` and
the loop in ``push_pending``.

Ordering rule: mutations to the same key are **kept in order, never coalesced**: each one is sent in
``id`` order and a later mutation of a key is held back while an earlier one of that key is not
``synced`` (a failed or conflicting mutation blocks its key until an operator retries or skips it).
Coalescing would lose the intermediate states a server may validate or audit and would merge a
mutation the server already de-duplicated by its ``mutation_id`` with one it has not seen.

Delivery is at least once: a process killed after the server applied a batch but before the
outcomes were written sends that batch again; the server de-duplicates by ``mutation_id``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class MutationStatus(StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    CONFLICT = "conflict"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Mutation:
    id: int
    mutation_id: str
    entity: str
    key: str
    operation: str
    payload: Any
    attempts: int = 0
    server_state: Any = None  # a conflict's: the server's current record


@dataclass(frozen=True)
class Applied:
    mutation_id: str


@dataclass(frozen=True)
class Rejected:
    mutation_id: str
    reason: str  # e.g. "validation_failed", or "error" (retried while below max_retry_attempts)
    details: Any = None


@dataclass(frozen=True)
class Conflict:
    mutation_id: str
    server_state: Any


PushOutcome = Applied | Rejected | Conflict


@dataclass(frozen=True)
class Decision:
    status: MutationStatus
    reason: str | None = None
    details: Any = None
    server_state: Any = None


def decide(outcome: PushOutcome, *, attempts: int, max_retry_attempts: int) -> Decision:
    """The next state of a mutation after the server's answer; ``attempts`` counts this one."""
    if isinstance(outcome, Applied):
        return Decision(MutationStatus.SYNCED)
    if isinstance(outcome, Conflict):
        return Decision(MutationStatus.CONFLICT, reason="conflict", server_state=outcome.server_state)
    if outcome.reason == "error" and attempts < max_retry_attempts:
        return Decision(MutationStatus.PENDING, reason="error", details=outcome.details)
    return Decision(MutationStatus.FAILED, reason=outcome.reason, details=outcome.details)


@dataclass(frozen=True)
class PushRejection:
    mutation_id: str
    entity: str
    key: str
    reason: str
    details: Any = None


@dataclass
class SyncResult:
    """Tether's SyncResult: what one push, pull or cycle did."""

    pushed: int = 0
    pulled: int = 0
    conflicts: int = 0
    failed: int = 0
    rejections: list[PushRejection] = field(default_factory=list)
    pull_errors: int = 0
    skipped: bool = False
    #: Rejected with reason ``error`` and put back to pending (below ``max_retry_attempts``).
    retried: int = 0

    def push_summary(self) -> dict[str, int]:
        return {"pushed": self.pushed, "conflicts": self.conflicts, "failed": self.failed, "retried": self.retried}

    def by_reason(self, reason: str) -> list[PushRejection]:
        return [r for r in self.rejections if r.reason == reason]

    def validation_errors(self) -> list[Any]:
        return [r.details for r in self.by_reason("validation_failed")]


class PushProtocolError(RuntimeError):
    """The provider's answer does not cover the batch exactly (missing or unknown mutation ids)."""


def check_outcomes(batch: Sequence[Mutation], outcomes: Sequence[PushOutcome]) -> dict[str, PushOutcome]:
    sent = {m.mutation_id for m in batch}
    got: dict[str, PushOutcome] = {}
    for o in outcomes:
        if o.mutation_id not in sent:
            raise PushProtocolError(f"push answered for unknown mutation {o.mutation_id!r}")
        got[o.mutation_id] = o
    missing = sent - set(got)
    if missing:
        raise PushProtocolError(f"push gave no outcome for {len(missing)} mutation(s), e.g. {sorted(missing)[0]!r}")
    return got


PushFn = Callable[[Any, list[Mutation]], Sequence[PushOutcome]]


def push_takes_session(push: Callable[..., Any]) -> str | None:
    """How a provider's bound ``push`` takes the run's session (pure, from its signature):
    ``"positional"`` (a third positional parameter or ``*args``), ``"keyword"`` (a keyword-only
    ``session`` or ``**kwargs``), or None: it is ``push(integration, batch)`` and gets two arguments."""
    try:
        params = list(inspect.signature(push).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a C callable): pass what the base class names
        return "positional"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params):
        return "positional"
    if any(p.kind is p.KEYWORD_ONLY and p.name == "session" for p in params) or any(
            p.kind is p.VAR_KEYWORD for p in params):
        return "keyword"
    return None


def push_caller(push: Callable[..., Any], session: Any) -> PushFn:
    """``push(integration, batch)`` whatever the provider's signature (see ``push_takes_session``)."""
    how = push_takes_session(push)
    if how == "positional":
        return lambda integration, batch: push(integration, batch, session)
    if how == "keyword":
        return lambda integration, batch: push(integration, batch, session=session)
    return lambda integration, batch: push(integration, batch)


class Direction(StrEnum):
    """What one run of a provider's job does (run tag ``integrations/direction``)."""

    SYNC = "sync"  # push, then pull (Tether's TetherClient::sync)
    PUSH = "push"  # push only (conflicts' server states are still applied locally)
    PULL = "pull"  # pull only

    @property
    def pushes(self) -> bool:
        return self is not Direction.PULL

    @property
    def pulls(self) -> bool:
        return self is not Direction.PUSH


def parse_direction(value: str | None) -> Direction:
    if value is None or value == "":
        return Direction.SYNC
    try:
        return Direction(value)
    except ValueError:
        raise ValueError(f"direction must be one of sync, push, pull; got {value!r}") from None


def push_pending(
    outbox: Any,
    integration: Any,
    push: PushFn,
    *,
    push_batch_size: int = 50,
    max_retry_attempts: int = 3,
    run_id: int | None = None,
    result: SyncResult | None = None,
) -> SyncResult:
    """Tether's push cycle for one integration over ``outbox`` (a ``store.outbox.Outbox``).

    1. ``error`` rejections below ``max_retry_attempts`` are already ``pending`` (see ``decide``);
    2. eligible pending mutations (first unfinished of their key) are loaded in batches;
    3. each batch goes to ``push``; a transport error (any exception) propagates and the batch stays
       ``pending`` with nothing lost; 4. outcomes are written in one transaction per batch.
    A mutation retried with ``error`` is sent again in a later push, not in this one.

    A conflict's server state is kept on the mutation (``server_state``); the engine dispatches it
    as a tracked item of the run (``engine.cycle``), like a pulled snapshot, not through a callback.
    ``result`` (filled in place) keeps what earlier batches did when a later one raises.
    """
    if push_batch_size < 1:
        raise ValueError(f"push_batch_size must be at least 1, got {push_batch_size}")
    result = result if result is not None else SyncResult()
    seen: set[int] = set()
    while True:
        batch = list(outbox.eligible(integration.id, limit=push_batch_size, exclude=seen))
        if not batch:
            return result
        seen.update(m.id for m in batch)
        outcomes = check_outcomes(batch, push(integration, batch))
        decisions = {
            m.id: decide(outcomes[m.mutation_id], attempts=m.attempts + 1, max_retry_attempts=max_retry_attempts)
            for m in batch
        }
        outbox.record_outcomes(decisions, run_id=run_id)
        for m in batch:
            d = decisions[m.id]
            if d.status is MutationStatus.SYNCED:
                result.pushed += 1
            elif d.status is MutationStatus.CONFLICT:
                result.conflicts += 1
            elif d.status is MutationStatus.FAILED:
                result.failed += 1
                result.rejections.append(PushRejection(m.mutation_id, m.entity, m.key, d.reason or "", d.details))
            else:
                result.retried += 1


def run_sync_result(run: Any, rejections: Sequence[Any] = ()) -> SyncResult:
    """Tether's SyncResult of one sync run (a ``sync_runs`` row as a mapping) and its rejected
    mutations (outbox rows): pushed / conflicts / failed from its push, pulled = items applied
    locally (pulled snapshots and conflicts' server states), pull_errors = items that failed."""
    summary = run.get("push_summary") or {}
    return SyncResult(
        pushed=int(summary.get("pushed", 0)),
        pulled=int(run.get("success_count") or 0),
        conflicts=int(summary.get("conflicts", 0)),
        failed=int(summary.get("failed", 0)),
        rejections=[PushRejection(r["mutation_id"], r["entity"], r["entity_key"], r["reason"] or "", r["details"])
                    for r in rejections],
        pull_errors=int(run.get("failed_count") or 0),
        skipped=run.get("status") == "skipped",
        retried=int(summary.get("retried", 0)),
    )
