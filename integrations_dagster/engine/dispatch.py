"""Dispatch: hand items' events to their listeners, and isolate the culprits of a failed batch.

A listener failure is ``(exception, kind)`` with kind ``retry`` (genuine failure), ``defer``
(``RateLimited``) or ``fatal`` (no retry helps); ``engine.retry.after_failure`` decides what
follows. Payloads are read and parsed only for event types that have a listener needing event
objects: types whose listeners are all staged never leave the database.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.events import InvalidPayload, InvalidPayloadError
from integrations_dagster.authoring.listeners import ListenerRegistry, ListenerSpec, close_awaitable, is_queued
from integrations_dagster.authoring.staged import StagedBatch
from integrations_dagster.errors import RateLimited, SyncListenerMustNotBeQueuedError
from integrations_dagster.store import Store
from integrations_dagster.store import items as item_sql

if TYPE_CHECKING:
    from sqlalchemy import Connection

Problem = tuple[BaseException, str]
Pair = tuple[dict[str, Any], Any]


class EventTypes:
    """Resolves stored ``module:QualName`` strings back to event classes (cached)."""

    def __init__(self) -> None:
        self._cache: dict[str, type] = {}

    def resolve(self, name: str) -> type:
        cls = self._cache.get(name)
        if cls is None:
            module_name, _, qualname = name.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            cls = obj
            self._cache[name] = cls
        return cls


class _Rollback(Exception):
    """Carries a staged listener's failure out of its transaction so the transaction rolls back."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem[0]))
        self.problem = problem


def run_listeners(
    listeners: ListenerRegistry, types: EventTypes, store: Store, items: list[dict[str, Any]], *,
    staged_guard: Callable[[Connection], None] | None = None,
) -> dict[int, Problem]:
    """Run every listener for ``items``; returns failures by item id as (exception, kind).

    ``staged_guard(conn)`` runs first inside each staged listener's transaction; what it raises
    is not a listener failure: it propagates (``engine.pipeline``: the run is no longer enumerating).
    """
    failures: dict[int, Problem] = {}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_type.setdefault(it["event_type"], []).append(it)
    for type_name, group in by_type.items():
        try:
            cls: Any = types.resolve(type_name)
        except Exception as exc:  # the event class is gone: no retry will bring it back
            for it in group:
                failures[it["id"]] = (exc, "fatal")
            continue
        specs = listeners.for_type(cls)
        invalid = issubclass(cls, InvalidPayload)
        alive: list[Pair]
        if invalid or any(not spec.staged for spec in specs):
            alive = []
            stored = payloads(store, group)
            for it in group:
                try:
                    raw = stored[it["id"]]
                    event = cls.model_validate_json(raw) if isinstance(raw, (str, bytes)) else cls.model_validate(raw)
                except Exception as exc:  # the stored payload no longer matches its event class
                    failures[it["id"]] = (exc, "fatal")
                    continue
                if invalid:  # recorded at enumeration; only a skip gets past it
                    failures[it["id"]] = (InvalidPayloadError(event.error), "fatal")
                    continue
                alive.append((it, event))
        else:
            alive = [(it, None) for it in group]
        for spec in specs:
            if not alive:
                break
            if is_queued(spec):
                err = SyncListenerMustNotBeQueuedError(
                    f"listener {spec.name} is queued/async: sync-item listeners must run synchronously"
                )
                for it, _ in alive:
                    failures[it["id"]] = (err, "fatal")
                alive = []
                break
            if spec.staged:
                alive = isolating(alive, failures, partial(call_staged, spec, store, cls, guard=staged_guard))
            elif spec.batch:
                alive = isolating(alive, failures, partial(call_batch, spec))
            else:
                survivors = []
                for it, ev in alive:
                    problem = call(spec, ev)
                    if problem is None:
                        survivors.append((it, ev))
                    else:
                        failures[it["id"]] = problem
                alive = survivors
    return failures


def payloads(store: Store, group: list[dict[str, Any]]) -> dict[int, Any]:
    """Stored payloads by item id: from the item rows when they carry them, else one query."""
    out: dict[int, Any] = {}
    missing: list[int] = []
    for it in group:
        if it.get("payload_json") is not None:
            out[it["id"]] = it["payload_json"]
        elif "payload" in it:
            out[it["id"]] = it["payload"]
        else:
            missing.append(it["id"])
    if missing:
        out.update(item_sql.payloads(store, missing))
    return out


def call(spec: ListenerSpec, arg: Any) -> Problem | None:
    """Call one listener; its failure as (exception, kind), or None."""
    try:
        result = spec.fn(arg)
    except RateLimited as exc:
        return exc, "defer"
    except Exception as exc:
        return exc, "retry"
    if close_awaitable(result):
        return (
            SyncListenerMustNotBeQueuedError(
                f"listener {spec.name} returned an awaitable: sync-item listeners must run synchronously"
            ),
            "fatal",
        )
    return None


def call_batch(spec: ListenerSpec, pairs: list[Pair]) -> Problem | None:
    """One call of a batch listener with the events of ``pairs``."""
    return call(spec, [ev for _, ev in pairs])


class GuardFailed(Exception):
    """Carries what a staged guard raised past the listener-failure handling."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def call_staged(spec: ListenerSpec, store: Store, cls: type, pairs: list[Pair], *,
                guard: Callable[[Connection], None] | None = None) -> Problem | None:
    """One staged call in a transaction of its own: committed if the listener returns.

    ``guard(conn)`` first, in the same transaction (see ``run_listeners``)."""
    events = [ev for _, ev in pairs] if all(ev is not None for _, ev in pairs) else None
    try:
        with store.begin() as conn:
            if guard is not None:
                try:
                    guard(conn)
                except Exception as exc:
                    raise GuardFailed(exc) from exc
            problem = call(spec, StagedBatch(conn, [it["id"] for it, _ in pairs], cls, events=events))
            if problem is not None:
                raise _Rollback(problem)
    except GuardFailed as failed:
        raise failed.cause from None
    except _Rollback as rollback:
        return rollback.problem
    except Exception as exc:  # the commit itself failed (e.g. a deferred constraint)
        return exc, "retry"
    return None


def isolating(
    alive: list[Pair], failures: dict[int, Problem], call_with: Callable[[list[Pair]], Problem | None]
) -> list[Pair]:
    """Call once for the whole batch; if that fails, once per item to isolate the culprit(s)."""
    problem = call_with(alive)
    if problem is None:
        return alive
    if problem[1] in ("defer", "fatal"):
        for it, _ in alive:
            failures[it["id"]] = problem
        return []
    if len(alive) == 1:
        failures[alive[0][0]["id"]] = problem
        return []
    survivors = []
    for pair in alive:
        single = call_with([pair])
        if single is None:
            survivors.append(pair)
        else:
            failures[pair[0]["id"]] = single
    return survivors
