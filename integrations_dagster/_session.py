"""``SyncSession``: what a provider dispatches items into while it enumerates.

Dispatched items are written to the state store in batches of ``flush_every`` as enumeration goes,
so memory stays flat however many items a provider yields. They only count once enumeration has
finished: an enumeration that raises or is killed leaves rows the engine discards, and the cursor
is untouched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._events import SyncItemEvent
from ._store import utcnow

if TYPE_CHECKING:
    from ._integration import Integration
    from ._settings import SyncSettings
    from ._store import Store

_JSON_SCALARS = (str, int, float, bool, type(None))


def event_type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_json(value: Any, what: str) -> None:
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, list):
        for v in value:
            _check_json(v, what)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{what} must be JSON: dict keys must be strings, got {k!r}")
            _check_json(v, what)
        return
    raise TypeError(
        f"{what} must be JSON (str, int, float, bool, None, list, dict), got {type(value).__name__}; "
        "pass datetimes as ISO-8601 strings"
    )


class SyncSession:
    """Handed to ``Provider.sync``; ``dispatch`` one event per changed item."""

    def __init__(
        self,
        *,
        store: Store,
        run_id: int,
        integration: Integration,
        settings: SyncSettings,
        log: logging.Logger | Any,
        http_factory: Any = None,
        chunk_size: int | None = None,
    ) -> None:
        self._store = store
        self.run_id = run_id
        self.integration = integration
        self._settings = settings
        self._log = log
        self._buffer: list[dict[str, Any]] = []
        self.dispatched = 0
        self._warned = False
        self._http_factory = http_factory
        self._http: Any = None
        # An explicit SyncSettings(chunk_size=...) wins; else the provider's preference; else the default.
        explicit = "chunk_size" in settings.model_fields_set
        self.chunk_size = settings.chunk_size if explicit or not chunk_size else chunk_size

    @property
    def cursor(self) -> Any:
        """The integration's cursor when this run started (None on the first run)."""
        return self.integration.cursor

    @property
    def http(self) -> Any:
        """An HTTP client bound to this integration (base URL, auth, rate budget, request log)."""
        if self._http is None:
            if self._http_factory is None:
                raise RuntimeError("this session has no HTTP client: the provider declares no base_url")
            self._http = self._http_factory()
        return self._http

    def dispatch(self, event: SyncItemEvent, *, checkpoint_value: Any, external_id: str | int | None = None) -> None:
        """Record one item (its listeners run later, in a mapped step, with retries)."""
        if not isinstance(event, SyncItemEvent):
            raise TypeError(f"dispatch() takes a SyncItemEvent, got {type(event).__name__}")
        _check_json(checkpoint_value, "checkpoint_value")
        chunk = self.dispatched // self.chunk_size
        self._buffer.append(
            {
                "run_id": self.run_id,
                "integration_id": self.integration.id,
                "chunk": chunk,
                "status": "pending",
                "attempts": 0,
                "deferrals": 0,
                "external_id": None if external_id is None else str(external_id),
                "checkpoint": checkpoint_value,
                "event_type": event_type_name(type(event)),
                # JSON text straight from pydantic's serializer: stored as is (COPY on PostgreSQL)
                "payload": event.model_dump_json(),
                "created_at": utcnow(),
            }
        )
        self.dispatched += 1
        if self.dispatched > self._settings.max_items_per_batch and not self._warned:
            self._warned = True
            self._log.warning(
                f"{self.integration}: more than max_items_per_batch={self._settings.max_items_per_batch} items "
                "in one run (a soft cap); consider a smaller sync window"
            )
        if len(self._buffer) >= self._settings.flush_every:
            self.flush()

    def dispatch_invalid(
        self,
        raw: Any,
        error: Exception | str,
        *,
        checkpoint_value: Any,
        external_id: str | int | None = None,
    ) -> None:
        """Record an item whose payload did not validate, instead of dropping it.

        It becomes a tracked item that fails at once (no retries), keeping its raw payload for the
        operator; the cursor holds before ``checkpoint_value`` (pass the last good checkpoint, or
        the cursor, when the item's own is unreadable) until it is skipped.
        """
        from ._events import InvalidPayload

        endpoint = getattr(error, "endpoint", None)
        field = getattr(error, "field", None)
        raw_json = raw if isinstance(raw, (dict, list, str, int, float, bool, type(None))) else repr(raw)
        try:
            _check_json(raw_json, "raw payload")
        except TypeError:
            raw_json = repr(raw)
        self.dispatch(
            InvalidPayload(endpoint=endpoint, field=field, error=str(error)[:4000], raw=raw_json),
            checkpoint_value=checkpoint_value,
            external_id=external_id,
        )

    def flush(self) -> None:
        if not self._buffer:
            return
        with self._store.begin() as conn:
            self._store.insert_items(conn, self._buffer)
        self._buffer = []

    @property
    def chunks(self) -> int:
        if self.dispatched == 0:
            return 0
        return (self.dispatched - 1) // self.chunk_size + 1

    def close(self) -> None:
        if self._http is not None:
            close = getattr(self._http, "close", None)
            if callable(close):
                close()
