"""``SyncSession``: what a provider dispatches items into while it enumerates.

Dispatched items are written to the state store in batches of ``flush_every`` as enumeration goes,
so memory stays flat however many items a provider yields. They only count once enumeration has
finished: an enumeration that raises or is killed leaves rows the engine discards, and the cursor
is untouched.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ._background import BackgroundWriter
from ._events import SyncItemEvent
from ._store import utcnow

if TYPE_CHECKING:
    from ._integration import Integration
    from ._settings import SyncSettings
    from ._store import Store

_JSON_SCALARS = (str, int, float, bool, type(None))
_dumps = json.dumps


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
        self._buffer: list[tuple[Any, ...]] = []
        self._type_names: dict[type, str] = {}
        self._stamp = utcnow()  # created_at of the items dispatched until the next write
        self.dispatched = 0
        self._warned = False
        self._http_factory = http_factory
        self._http: Any = None
        # PostgreSQL batches are written in the background while enumeration goes on (see
        # BackgroundWriter); SQLite writes in-process anyway, one writer at a time: synchronous.
        self._background = not store.is_sqlite
        self._writer: BackgroundWriter | None = None  # started at the first batch
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
        if not isinstance(checkpoint_value, str):  # a str is always a JSON value: skip the walk
            _check_json(checkpoint_value, "checkpoint_value")
        cls = type(event)
        type_name = self._type_names.get(cls)
        if type_name is None:
            type_name = self._type_names[cls] = event_type_name(cls)
        # A row in Store._ITEM_COLUMNS order; the payload is JSON text straight from pydantic's
        # serializer, stored as is (COPY on PostgreSQL).
        self._buffer.append((
            self.run_id, self.integration.id, self.dispatched // self.chunk_size, "pending", 0, 0,
            None if external_id is None else str(external_id), _dumps(checkpoint_value), type_name,
            event.model_dump_json(), self._stamp,
        ))
        self.dispatched += 1
        if self.dispatched > self._settings.max_items_per_batch and not self._warned:
            self._warned = True
            self._log.warning(
                f"{self.integration}: more than max_items_per_batch={self._settings.max_items_per_batch} items "
                "in one run (a soft cap); consider a smaller sync window"
            )
        if len(self._buffer) >= self._settings.flush_every:
            self._write_buffer()

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

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self._stamp = utcnow()
        if self._background:
            if self._writer is None:
                self._writer = BackgroundWriter("dispatch-writer")
            self._writer.submit(self._insert, rows)
        else:
            self._insert(rows)

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self._store.begin() as conn:
            # Only into a run that is still enumerating (checked under a lock in the same
            # transaction): a run discarded meanwhile never gets rows back, and its enumeration fails.
            status = self._store.run_status(conn, self.run_id, lock=True)
            if status != "enumerating":
                from ._errors import SyncRunDiscarded, SyncRunStateConflict

                cls = SyncRunDiscarded if status in (None, "failed") else SyncRunStateConflict
                raise cls(self.run_id, "enumerating", status, "store dispatched items")
            self._store.insert_item_rows(conn, rows)

    def flush(self) -> None:
        """Write every dispatched item now and wait until it is stored."""
        self._write_buffer()
        if self._writer is not None:
            self._writer.drain()

    @property
    def chunks(self) -> int:
        if self.dispatched == 0:
            return 0
        return (self.dispatched - 1) // self.chunk_size + 1

    def stop_writing(self) -> None:
        """Stop the background writer after the batch it has in flight (nothing is written later)."""
        if self._writer is not None:
            self._writer.stop()
        self._background = False  # anything flushed after this is written synchronously

    def close(self) -> None:
        """End the session: stop the background writer, close the HTTP client."""
        self.stop_writing()
        if self._http is not None:
            close = getattr(self._http, "close", None)
            if callable(close):
                close()
