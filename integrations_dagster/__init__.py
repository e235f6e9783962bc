"""integrations-dagster: keep a local database in step with external APIs, run by Dagster.

The public API is what ``__all__`` lists; every other module is private.
"""

from ._definitions import build_definitions, engine_of
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
from ._http_session import SyncContext, current_sync
from ._health import HealthPolicy
from ._integration import Integration
from ._listeners import listener
from ._provider import Provider, reduce_by_max
from ._ratelimit import RateLimit
from ._resource import IntegrationsResource
from ._runner import DefinitionsRef, execute_sync, reexecute_from_failure
from ._session import SyncSession
from ._staged import StagedBatch
from ._settings import SyncSettings
from ._store import Store
from ._sync_now import SyncRequest, request_sync

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
