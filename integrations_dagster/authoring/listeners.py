"""Listener registration and the check that refuses queued (async) listeners.

A listener is a plain function ``fn(event) -> None`` run synchronously by the framework for each
item. ``listener(EventType, batch=True)`` marks a function that takes a *list* of events; the
engine calls it once per group of ready items and, if it raises, once per item to isolate the
culprit, so per-item guarantees hold while the common case does one round trip per chunk.
``listener(EventType, staged=True)`` is a batch listener that receives a ``StagedBatch`` (the
batch's item ids and a connection in its own transaction) to move the batch with set-based SQL
straight from the stored events; see ``_staged.py``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__integrations_listener__"


@dataclass(frozen=True)
class ListenerSpec:
    event_type: type
    fn: Callable[..., Any]
    batch: bool = False
    queued: bool = False
    staged: bool = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


def listener(
    event_type: type, *, batch: bool = False, staged: bool = False, queued: bool = False
) -> Callable[[F], F]:
    """Mark ``fn`` as a listener for ``event_type`` (and its subclasses).

    Marking registers nothing anywhere: pass the function to ``build_definitions(listeners=[...])``
    (or a ``ListenerRegistry``); only the listeners given there run.

    ``batch=True``: ``fn`` takes a list of events. ``staged=True``: ``fn`` takes a ``StagedBatch``
    (implies batch semantics: one call per batch, one call per item to isolate a failure).

    ``queued=True`` exists only so that a listener declared as queued is refused loudly at run time
    (``SyncListenerMustNotBeQueuedError``) rather than silently reporting success early.
    """

    def decorate(fn: F) -> F:
        spec = ListenerSpec(event_type=event_type, fn=fn, batch=batch or staged, queued=queued, staged=staged)
        specs = list(getattr(fn, _ATTR, ()))
        specs.append(spec)
        try:
            setattr(fn, _ATTR, tuple(specs))
        except AttributeError:  # builtins / some callables refuse attributes
            pass
        return fn

    return decorate


def is_queued(spec: ListenerSpec) -> bool:
    """True when a listener cannot be run synchronously to completion."""
    if spec.queued or getattr(spec.fn, "queued", False) is True:
        return True
    fn: Any = spec.fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
    if call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call):
        return True
    return False


def close_awaitable(result: Any) -> bool:
    """Return True (after closing it, to avoid 'never awaited' warnings) if ``result`` is awaitable."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()
        return True
    return False


ListenersArg = Iterable[Any] | Mapping[type, Iterable[Callable[..., Any]]]


class ListenerRegistry:
    """The ordered listeners of one set of definitions (``ListenerRegistry.build(listeners)``)."""

    def __init__(self, specs: Iterable[ListenerSpec]) -> None:
        self._specs = list(specs)
        self._cache: dict[type, list[ListenerSpec]] = {}

    @classmethod
    def build(cls, listeners: ListenersArg) -> ListenerRegistry:
        """The given listeners, in order. There is no global registry: ``[]`` means none.

        Accepted forms: decorated functions, ``(EventType, fn)`` tuples, ``ListenerSpec`` objects, or a
        mapping ``{EventType: [fn, ...]}``; an existing ``ListenerRegistry`` is returned as it is.
        """
        if isinstance(listeners, ListenerRegistry):
            return listeners
        if listeners is None:
            raise TypeError("listeners must be given (a list of @listener functions or (EventType, fn) pairs; "
                            "[] for none): there is no global listener registry")
        specs: list[ListenerSpec] = []
        if isinstance(listeners, Mapping):
            for event_type, fns in listeners.items():
                specs.extend(ListenerSpec(event_type=event_type, fn=fn) for fn in fns)
            return cls(specs)
        for entry in listeners:
            if isinstance(entry, ListenerSpec):
                specs.append(entry)
            elif isinstance(entry, tuple) and len(entry) == 2:
                specs.append(ListenerSpec(event_type=entry[0], fn=entry[1]))
            elif hasattr(entry, _ATTR):
                specs.extend(getattr(entry, _ATTR))
            else:
                raise TypeError(
                    f"{entry!r} is not a listener: decorate it with @listener(EventType) or pass (EventType, fn)"
                )
        return cls(specs)

    def for_type(self, event_type: type) -> list[ListenerSpec]:
        found = self._cache.get(event_type)
        if found is None:
            found = [s for s in self._specs if issubclass(event_type, s.event_type)]
            self._cache[event_type] = found
        return found

    def __iter__(self) -> Iterator[ListenerSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)
