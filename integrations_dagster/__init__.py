"""integrations-dagster: keep a local database in step with external APIs, run by Dagster.

The public API is what ``__all__`` lists; every other module is private.

Names are imported on first use (``__getattr__`` below), so ``import integrations_dagster`` and the
authoring API (``Provider``, ``listener``, events, ``Store``, ...) do not import Dagster: the CLI's
verbs that run no job answer in a fraction of ``import dagster``'s time. ``build_definitions`` and
``engine_of`` come from ``_codeloc``, which imports Dagster only when it builds real ``Definitions``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the private module that defines it. Modules marked (dagster) import Dagster.
_EXPORTS: dict[str, str] = {
    "CredentialsError": "._errors",
    "DefinitionsRef": "._runner",  # (dagster)
    "HealthPolicy": "._health",
    "Integration": "._integration",
    "InvalidPayload": "._events",
    "IntegrationNotFound": "._errors",
    "IntegrationsError": "._errors",
    "IntegrationsResource": "._resource",  # (dagster)
    "Provider": "._provider",
    "RateLimit": "._ratelimit",
    "RateLimited": "._errors",
    "ReconcileResult": "._engine",
    "Store": "._store",
    "SyncCompleted": "._events",
    "SyncContext": "._http_session",
    "SyncEngine": "._engine",
    "SyncItemEvent": "._events",
    "SyncItemFailed": "._events",
    "SyncItemNotFound": "._errors",
    "SyncListenerMustNotBeQueuedError": "._errors",
    "SyncRequest": "._sync_now",  # (dagster)
    "StagedBatch": "._staged",
    "SyncSession": "._session",
    "SyncSettings": "._settings",
    "UnknownProvider": "._errors",
    "build_definitions": "._codeloc",  # Dagster only when it builds Definitions
    "current_sync": "._http_session",
    "engine_of": "._codeloc",
    "execute_sync": "._runner",  # (dagster)
    "listener": "._listeners",
    "reduce_by_max": "._provider",
    "reexecute_from_failure": "._runner",  # (dagster)
    "request_sync": "._sync_now",  # (dagster)
}

__all__ = [
    "CredentialsError",
    "DefinitionsRef",
    "HealthPolicy",
    "Integration",
    "InvalidPayload",
    "IntegrationNotFound",
    "IntegrationsError",
    "IntegrationsResource",
    "Provider",
    "RateLimit",
    "RateLimited",
    "ReconcileResult",
    "Store",
    "SyncCompleted",
    "SyncContext",
    "SyncEngine",
    "SyncItemEvent",
    "SyncItemFailed",
    "SyncItemNotFound",
    "SyncListenerMustNotBeQueuedError",
    "SyncRequest",
    "StagedBatch",
    "SyncSession",
    "SyncSettings",
    "UnknownProvider",
    "build_definitions",
    "current_sync",
    "engine_of",
    "execute_sync",
    "listener",
    "reduce_by_max",
    "reexecute_from_failure",
    "request_sync",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; never executed
    from ._codeloc import build_definitions, engine_of
    from ._engine import ReconcileResult, SyncEngine
    from ._errors import (
        CredentialsError,
        IntegrationNotFound,
        IntegrationsError,
        RateLimited,
        SyncItemNotFound,
        SyncListenerMustNotBeQueuedError,
        UnknownProvider,
    )
    from ._events import InvalidPayload, SyncCompleted, SyncItemEvent, SyncItemFailed
    from ._health import HealthPolicy
    from ._http_session import SyncContext, current_sync
    from ._integration import Integration
    from ._listeners import listener
    from ._provider import Provider, reduce_by_max
    from ._ratelimit import RateLimit
    from ._resource import IntegrationsResource
    from ._runner import DefinitionsRef, execute_sync, reexecute_from_failure
    from ._session import SyncSession
    from ._settings import SyncSettings
    from ._staged import StagedBatch
    from ._store import Store
    from ._sync_now import SyncRequest, request_sync
