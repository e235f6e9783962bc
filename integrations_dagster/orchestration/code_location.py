"""A code location's engine without importing Dagster, for the CLI's verbs that run no job.

``build_definitions`` (the public one, defined here) first builds the ``SyncEngine`` (providers,
listeners, settings and health need pydantic and SQLAlchemy, not Dagster), then hands over to
``_definitions.build_definitions``, which builds the jobs, assets, sensors and resources and imports
Dagster. ``load_engine`` imports a definitions module with that second step switched off: inside it
``build_definitions`` returns an ``EngineOnly`` (the engine, no Dagster objects), ``engine_of``
accepts it, and the module is dropped from ``sys.modules`` afterwards, so a later import in the same
process (a verb that does run a job) builds real ``Definitions``. A module that needs real Dagster
objects at import time (it merges the result with other ``Definitions``, say) raises inside the
engine-only import; ``load_engine`` then imports it the normal way: slower, never wrong.
"""

from __future__ import annotations

import contextvars
import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from integrations_dagster.authoring.listeners import ListenerRegistry, ListenersArg
from integrations_dagster.authoring.provider import Provider
from integrations_dagster.engine.engine import SyncEngine
from integrations_dagster.engine.health import HealthPolicy
from integrations_dagster.settings import SyncSettings

if TYPE_CHECKING:
    from dagster import Definitions

_ENGINE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("integrations_engine_only", default=False)


class EngineOnly:
    """What ``build_definitions`` returns while a module is imported by ``load_engine``: the engine only."""

    __slots__ = ("engine",)

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"EngineOnly(providers={sorted(self.engine.providers)})"


def make_engine(
    *,
    providers: Sequence[Provider],
    listeners: ListenersArg,
    settings: SyncSettings | None = None,
    health: HealthPolicy | None = None,
) -> SyncEngine:
    """The engine of one ``build_definitions`` call (the same with or without Dagster)."""
    return SyncEngine(
        providers=providers, listeners=ListenerRegistry.build(listeners), settings=settings or SyncSettings(),
        health=health,
    )


def build_definitions(
    *,
    providers: Sequence[Provider],
    listeners: ListenersArg,
    settings: SyncSettings | None = None,
    health: HealthPolicy | None = None,
    **options: Any,
) -> Definitions:
    """Dagster definitions for ``providers``: per provider a ``<key>_sync`` job partitioned by integration,
    an asset ``["integrations", key]`` (the sync timeline) and, when available, its sensor; plus the
    operator jobs (skip, retry, advance cursor, prune).

    ``options``: ``resources`` (extra Dagster resources), ``extra`` (``Definitions`` merged in),
    ``sensors`` and ``operator_jobs`` (both True by default); see ``_definitions.build_definitions``.
    """
    if _ENGINE_ONLY.get():
        return EngineOnly(make_engine(providers=providers, listeners=listeners, settings=settings,  # type: ignore[return-value]
                                      health=health))
    from integrations_dagster.orchestration.definitions import build_definitions as build

    return build(providers=providers, listeners=listeners, settings=settings, health=health, **options)


def engine_of(defs: Definitions | EngineOnly) -> SyncEngine:
    """The engine behind definitions made by ``build_definitions`` (for the CLI and tests)."""
    if isinstance(defs, EngineOnly):
        return defs.engine
    from integrations_dagster.orchestration.definitions import engine_of as real_engine_of

    return real_engine_of(defs)


@contextmanager
def engine_only() -> Iterator[None]:
    """Inside: ``build_definitions`` returns an ``EngineOnly`` and imports nothing from Dagster."""
    token = _ENGINE_ONLY.set(True)
    try:
        yield
    finally:
        _ENGINE_ONLY.reset(token)


def _resolve(module: str, attr: str, kwargs: Mapping[str, Any]) -> Any:
    target = getattr(importlib.import_module(module), attr)
    if callable(target) and not isinstance(target, EngineOnly) and type(target).__name__ != "Definitions":
        return target(**kwargs)
    return target


def load_engine(module: str, attr: str = "defs", kwargs: Mapping[str, Any] | None = None) -> SyncEngine:
    """The engine of the definitions at ``module:attr`` (a factory is called with ``kwargs``).

    Imports no Dagster when the module only calls ``build_definitions`` (and imports nothing from
    Dagster itself). Raises what the module raises, ``LookupError`` if ``build_definitions`` did not
    make the object.
    """
    kwargs = dict(kwargs or {})
    if module not in sys.modules and "dagster" not in sys.modules:
        try:
            with engine_only():
                found = _resolve(module, attr, kwargs)
        except Exception:
            found = None  # it needed Dagster objects: import it the normal way below
        finally:
            sys.modules.pop(module, None)  # a later import builds real Definitions
        if isinstance(found, EngineOnly):
            return found.engine
    from integrations_dagster.orchestration.in_process import DefinitionsRef

    return engine_of(DefinitionsRef(module, attr, kwargs).load())
