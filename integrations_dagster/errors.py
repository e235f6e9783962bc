"""Exceptions of the public API and of user-facing errors."""

from __future__ import annotations


class IntegrationsError(Exception):
    """Base class for errors an operator can act on; the message names the thing."""


class IntegrationNotFound(IntegrationsError):
    def __init__(self, integration_id: object) -> None:
        super().__init__(f"integration {integration_id} not found")
        self.integration_id = integration_id


class SyncItemNotFound(IntegrationsError):
    def __init__(self, item_id: object) -> None:
        super().__init__(f"sync item {item_id} not found")
        self.item_id = item_id


class UnknownProvider(IntegrationsError):
    def __init__(self, key: str, known: list[str]) -> None:
        super().__init__(f"unknown provider {key!r}; known providers: {', '.join(sorted(known)) or 'none'}")
        self.key = key


class InvalidIntegrationConfig(IntegrationsError):
    """An integration's metadata or credentials do not match what its provider declares.

    ``fields`` names each offending field as ``metadata.<name>`` or ``credentials.<name>``; the message
    lists them with what is wrong, never a credential's value.
    """

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.fields = fields


class CredentialsError(IntegrationsError):
    """Credentials cannot be stored or read (no key, wrong key)."""


class RateLimited(Exception):
    """Raised by a listener or the HTTP layer to say "defer me for ``retry_after`` seconds".

    A deferral does not count as one of the item's tries, but it does count against the item's
    absolute retry window.
    """

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = max(0.0, float(retry_after))
        super().__init__(message or f"rate limited; retry after {self.retry_after:g} s")


class SyncListenerMustNotBeQueuedError(Exception):
    """A sync-item listener was async, returned an awaitable, or was declared queued.

    Such a listener would report success before its work ran, the failure this design exists to
    prevent, so the item fails at once and is not retried.
    """


class EnumerationAborted(Exception):
    """The provider's enumeration raised; nothing it dispatched counts and the cursor is unchanged."""


class SyncRunStateConflict(IntegrationsError):
    """A sync run was not in the state a transition expected (compare-and-set lost): another
    process changed it first (discarded an enumeration presumed dead, settled the run, ...)."""

    def __init__(self, run_id: int, expected: tuple[str, ...] | str, found: str | None, action: str) -> None:
        want = expected if isinstance(expected, str) else " or ".join(expected)
        super().__init__(
            f"sync run {run_id} cannot {action}: it is {found or 'gone'}, not {want} "
            "(another process changed it first); nothing more is written for it"
        )
        self.run_id = run_id
        self.expected = expected
        self.found = found


class SyncRunDiscarded(SyncRunStateConflict):
    """The run's enumeration was discarded (presumed dead) while it was still going: what it
    dispatched is gone and it can never be processed or reconciled; the next sync starts over."""
