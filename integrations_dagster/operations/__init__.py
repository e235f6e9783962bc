"""The operator actions behind the CLI's verbs, as functions (public): retry, skip, advance cursor,
enable/disable, prune, rotate credentials, status and timeline. Each takes a ``Store`` (and, where
items run again, the engine) and returns a typed result. The ``integrations`` command itself is
``integrations_dagster.cli``; ``progress`` is the CLI's progress display (internal).
"""

from integrations_dagster.operations.actions import *  # noqa: F403
from integrations_dagster.operations.actions import __all__ as __all__
