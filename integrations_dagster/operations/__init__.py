"""The operator actions behind the CLI's verbs, as functions (public): retry, skip, advance cursor,
enable/disable, prune, rotate credentials, status and timeline, account setup (``connect``, and
the OAuth steps ``start_authorization`` / ``complete_authorization``). Each takes a ``Store`` (and, where
items run again, the engine) and returns a typed result. The ``integrations`` command itself is
``integrations_dagster.cli``; ``progress`` is the CLI's progress display (internal).

The names are loaded on first use (PEP 562): importing a submodule of this package, such as the warm
sync client (``warm_client``, standard library only), does not import the store, SQLAlchemy or pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integrations_dagster.operations.actions import *  # noqa: F403
    from integrations_dagster.operations.connect import AuthorizationStart as AuthorizationStart
    from integrations_dagster.operations.connect import IntegrationSetup as IntegrationSetup
    from integrations_dagster.operations.connect import complete_authorization as complete_authorization
    from integrations_dagster.operations.connect import connect as connect
    from integrations_dagster.operations.connect import start_authorization as start_authorization

_ACTIONS = (
    "AdvanceResult", "ItemActionResult", "PruneResult", "RetryFailedResult", "RotateResult", "add_integration",
    "advance_cursor", "disable_integration", "enable_integration", "list_failed_items", "list_integrations",
    "prune", "remove_integration", "retry_failed_items", "retry_item", "rotate_credentials", "show_integration",
    "skip_item", "status_rows", "timeline",
)
_CONNECT = ("AuthorizationStart", "IntegrationSetup", "complete_authorization", "connect", "start_authorization")

__all__ = [*_ACTIONS, *_CONNECT]


def __getattr__(name: str) -> Any:
    if name in _ACTIONS:
        return getattr(importlib.import_module("integrations_dagster.operations.actions"), name)
    if name in _CONNECT:
        return getattr(importlib.import_module("integrations_dagster.operations.connect"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
