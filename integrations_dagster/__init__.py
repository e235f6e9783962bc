"""integrations-dagster: keep a local database in step with external APIs, run by Dagster.

The public API is what ``__all__`` lists; every other module is private.

Names are imported on first use (``__getattr__`` below), so ``import integrations_dagster`` and the
authoring API (``Provider``, ``listener``, events, ``Store``, ...) do not import Dagster: the CLI's
verbs that run no job answer in a fraction of ``import dagster``'s time. ``build_definitions`` and
``engine_of`` come from ``orchestration.code_location``, which imports Dagster only when it builds real ``Definitions``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the internal module that defines it. Modules marked (dagster) import Dagster.
_EXPORTS: dict[str, str] = {
    "CredentialsError": ".errors",
    "DefinitionsRef": ".orchestration.in_process",  # (dagster)
    "HealthPolicy": ".engine.health",
    "Integration": ".authoring.integration",
    "InvalidPayload": ".authoring.events",
    "IntegrationNotFound": ".errors",
    "IntegrationsError": ".errors",
    "InvalidIntegrationConfig": ".errors",
    "IntegrationsResource": ".orchestration.resource",  # (dagster)
    "Provider": ".authoring.provider",
    "RateLimit": ".authoring.rate_limit",
    "RateLimited": ".errors",
    "ReconcileResult": ".engine.engine",
    "Store": ".store",
    "SyncCompleted": ".authoring.events",
    "SyncContext": ".authoring.context",
    "SyncEngine": ".engine.engine",
    "SyncItemEvent": ".authoring.events",
    "SyncItemFailed": ".authoring.events",
    "SyncItemNotFound": ".errors",
    "SyncListenerMustNotBeQueuedError": ".errors",
    "SyncRequest": ".orchestration.request",  # (dagster)
    "StagedBatch": ".authoring.staged",
    "SyncSession": ".authoring.session",
    "SyncSettings": ".settings",
    "UnknownProvider": ".errors",
    "add_integration": ".operations.actions",
    "build_definitions": ".orchestration.code_location",  # Dagster only when it builds Definitions
    "current_sync": ".authoring.context",
    "engine_of": ".orchestration.code_location",
    "execute_sync": ".orchestration.in_process",  # (dagster)
    "listener": ".authoring.listeners",
    "reduce_by_max": ".authoring.provider",
    "reexecute_from_failure": ".orchestration.in_process",  # (dagster)
    "request_sync": ".orchestration.request",  # (dagster)
    # push direction (issue 13)
    "Applied": ".engine.push",
    "Conflict": ".engine.push",
    "Direction": ".engine.push",
    "Mutation": ".engine.push",
    "Outbox": ".store.outbox",
    "PushRejection": ".engine.push",
    "Rejected": ".engine.push",
    "SyncResult": ".engine.push",
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
    "InvalidIntegrationConfig",
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
    "add_integration",
    "build_definitions",
    "current_sync",
    "engine_of",
    "execute_sync",
    "listener",
    "reduce_by_max",
    "reexecute_from_failure",
    "request_sync",
    # push direction (issue 13)
    "Applied",
    "Conflict",
    "Direction",
    "Mutation",
    "Outbox",
    "PushRejection",
    "Rejected",
    "SyncResult",
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
    from .orchestration.code_location import build_definitions, engine_of
    from .operations.actions import add_integration
    from .engine.engine import ReconcileResult, SyncEngine
    from .errors import (
        CredentialsError,
        IntegrationNotFound,
        IntegrationsError,
        InvalidIntegrationConfig,
        RateLimited,
        SyncItemNotFound,
        SyncListenerMustNotBeQueuedError,
        UnknownProvider,
    )
    from .authoring.events import InvalidPayload, SyncCompleted, SyncItemEvent, SyncItemFailed
    from .engine.health import HealthPolicy
    from .authoring.context import SyncContext, current_sync
    from .authoring.integration import Integration
    from .authoring.listeners import listener
    from .authoring.provider import Provider, reduce_by_max
    from .authoring.rate_limit import RateLimit
    from .orchestration.resource import IntegrationsResource
    from .orchestration.in_process import DefinitionsRef, execute_sync, reexecute_from_failure
    from .authoring.session import SyncSession
    from .settings import SyncSettings
    from .authoring.staged import StagedBatch
    from .store import Store
    from .orchestration.request import SyncRequest, request_sync
    from .engine.push import Applied, Conflict, Direction, Mutation, PushRejection, Rejected, SyncResult
    from .store.outbox import Outbox
