"""The operator actions behind the CLI's verbs, as functions (public): retry, skip, advance cursor,
enable/disable, prune, rotate credentials, status and timeline, account setup (``connect``, and
the OAuth steps ``start_authorization`` / ``complete_authorization``). Each takes a ``Store`` (and, where
items run again, the engine) and returns a typed result. The ``integrations`` command itself is
``integrations_dagster.cli``; ``progress`` is the CLI's progress display (internal).
"""

from integrations_dagster.operations.actions import *  # noqa: F403
from integrations_dagster.operations.actions import __all__ as _actions
from integrations_dagster.operations.connect import (
    AuthorizationStart,
    IntegrationSetup,
    complete_authorization,
    connect,
    start_authorization,
)

__all__ = [*_actions, "AuthorizationStart", "IntegrationSetup", "complete_authorization", "connect",
           "start_authorization"]
