"""Firing the framework's notification events (``SyncCompleted``, ``SyncItemFailed``) to listeners."""

from __future__ import annotations

from typing import Any

from integrations_dagster.authoring.listeners import ListenerRegistry, close_awaitable
from integrations_dagster.security.redaction import scrub, secret_values
from integrations_dagster.store import Store


def fire(listeners: ListenerRegistry, event: Any, log: Any, store: Store | None = None) -> None:
    """Call every listener of ``event``'s type; a listener that raises is logged (redacted), never
    propagated: a notification listener must not undo a reconciliation."""
    for spec in listeners.for_type(type(event)):
        try:
            result = spec.fn(event)
            close_awaitable(result)
        except Exception as exc:
            log.warning(f"listener {spec.name} for {type(event).__name__} raised: "
                        f"{redacted(exc, store, getattr(event, 'integration_id', None))}")


def redacted(exc: BaseException, store: Store | None, integration_id: int | None) -> str:
    """``repr(exc)`` with the integration's credentials masked (they may be in the message)."""
    text = repr(exc)
    if store is None or integration_id is None:
        return text
    try:
        secrets = secret_values(store.get_integration(integration_id))
    except Exception:  # no key to decrypt, or the integration is gone: mask nothing we cannot know
        return text
    return scrub(text, secrets) if secrets else text
