"""integrations-dagster: keep a local database in step with external APIs, run by Dagster.

The public API is what ``__all__`` lists, plus three public subpackages: ``integrations_dagster.http``
(the API client and paginators a provider uses), ``integrations_dagster.operations`` (the operator
actions behind the CLI's verbs, as functions) and ``integrations_dagster.testing``. Every other
module is internal and may change without notice.

For a provider author: ``Provider``, ``SyncSession``, ``SyncItemEvent``, ``InvalidPayload``,
``listener``, ``StagedBatch``, ``Integration``, ``RateLimit``, ``RateLimited``, ``reduce_by_max``,
``current_sync`` / ``SyncContext``, ``ProviderTables``, the run events ``SyncCompleted`` /
``SyncItemFailed`` and the errors. For an application: ``build_definitions`` (with a list of listeners
or a ``ListenerRegistry``), ``SyncSettings``, ``HealthPolicy``, ``Store``, ``IntegrationsResource``,
``DefinitionsRef`` with ``execute_sync`` / ``reexecute_from_failure``, ``request_sync`` /
``SyncRequest``, and the run summary (``SUMMARY_KEYS``, ``run_summary``).

Names are imported on first use (``__getattr__`` below), so ``import integrations_dagster`` and the
authoring API do not import Dagster: the CLI's verbs that run no job answer in a fraction of
``import dagster``'s time. Names marked (dagster) import Dagster when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the internal module that defines it.
_EXPORTS: dict[str, str] = {
    # provider authors
    "Provider": ".authoring.provider",
    "ProviderTables": ".authoring.tables",
    "SyncSession": ".authoring.session",
    "SyncItemEvent": ".authoring.events",
    "InvalidPayload": ".authoring.events",
    "SyncCompleted": ".authoring.events",
    "SyncItemFailed": ".authoring.events",
    "StagedBatch": ".authoring.staged",
    "Integration": ".authoring.integration",
    "RateLimit": ".authoring.rate_limit",
    "SyncContext": ".authoring.context",
    "current_sync": ".authoring.context",
    "listener": ".authoring.listeners",
    "ListenerRegistry": ".authoring.listeners",
    "reduce_by_max": ".authoring.provider",
    # errors
    "CredentialsError": ".errors",
    "IntegrationNotFound": ".errors",
    "IntegrationsError": ".errors",
    "InvalidIntegrationConfig": ".errors",
    "RateLimited": ".errors",
    "SyncItemNotFound": ".errors",
    "SyncListenerMustNotBeQueuedError": ".errors",
    "UnknownProvider": ".errors",
    "OAuth2Declaration": ".security.oauth2",
    # applications
    "add_integration": ".operations.actions",
    "build_definitions": ".orchestration.code_location",  # Dagster only when it builds Definitions
    "SyncSettings": ".settings",
    "HealthPolicy": ".engine.health",
    "Store": ".store",
    "SUMMARY_KEYS": ".status",
    "run_summary": ".status",
    "IntegrationsResource": ".orchestration.resource",  # (dagster)
    "DefinitionsRef": ".orchestration.in_process",  # (dagster)
    "execute_sync": ".orchestration.in_process",  # (dagster)
    "reexecute_from_failure": ".orchestration.in_process",  # (dagster)
    "SyncRequest": ".orchestration.request",  # (dagster)
    "request_sync": ".orchestration.request",  # (dagster)
    # push direction (issue 13)
    "Applied": ".engine.push",
    "Conflict": ".engine.push",
    "Direction": ".engine.push",
    "Mutation": ".engine.push",
    "Outbox": ".store.outbox",
    "PushOutcome": ".engine.push",
    "PushRejection": ".engine.push",
    "Rejected": ".engine.push",
    "SyncResult": ".engine.push",
}

#: Names this package exported before its public API was narrowed (issue 10): internal now.
_MOVED: dict[str, str] = {
    "SyncEngine": "integrations_dagster.engine.engine",
    "ReconcileResult": "integrations_dagster.engine.results",
    "engine_of": "integrations_dagster.orchestration.code_location",
}

__all__ = [
    "CredentialsError",
    "DefinitionsRef",
    "HealthPolicy",
    "Integration",
    "IntegrationNotFound",
    "IntegrationsError",
    "IntegrationsResource",
    "InvalidIntegrationConfig",
    "InvalidPayload",
    "ListenerRegistry",
    "OAuth2Declaration",
    "Provider",
    "ProviderTables",
    "RateLimit",
    "RateLimited",
    "SUMMARY_KEYS",
    "StagedBatch",
    "Store",
    "SyncCompleted",
    "SyncContext",
    "SyncItemEvent",
    "SyncItemFailed",
    "SyncItemNotFound",
    "SyncListenerMustNotBeQueuedError",
    "SyncRequest",
    "SyncSession",
    "SyncSettings",
    "UnknownProvider",
    "add_integration",
    "build_definitions",
    "current_sync",
    "execute_sync",
    "listener",
    "reduce_by_max",
    "reexecute_from_failure",
    "request_sync",
    "run_summary",
    # push direction (issue 13)
    "Applied",
    "Conflict",
    "Direction",
    "Mutation",
    "Outbox",
    "PushOutcome",
    "PushRejection",
    "Rejected",
    "SyncResult",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _MOVED:
            raise AttributeError(f"{name} is internal, not part of the public API: import it from {_MOVED[name]} "
                                 "(and expect it to change)")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; never executed
    from .authoring.context import SyncContext, current_sync
    from .authoring.events import InvalidPayload, SyncCompleted, SyncItemEvent, SyncItemFailed
    from .authoring.integration import Integration
    from .authoring.listeners import ListenerRegistry, listener
    from .authoring.provider import Provider, reduce_by_max
    from .authoring.rate_limit import RateLimit
    from .authoring.session import SyncSession
    from .authoring.staged import StagedBatch
    from .authoring.tables import ProviderTables
    from .engine.health import HealthPolicy
    from .engine.push import Applied, Conflict, Direction, Mutation, PushOutcome, PushRejection, Rejected, SyncResult
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
    from .operations.actions import add_integration
    from .orchestration.code_location import build_definitions
    from .orchestration.in_process import DefinitionsRef, execute_sync, reexecute_from_failure
    from .orchestration.request import SyncRequest, request_sync
    from .orchestration.resource import IntegrationsResource
    from .security.oauth2 import OAuth2Declaration
    from .settings import SyncSettings
    from .status import SUMMARY_KEYS, run_summary
    from .store import Store
    from .store.outbox import Outbox
