"""``SyncSession``: what a provider dispatches items into while it enumerates.

Dispatched items are written to the state store in batches of ``flush_every`` as enumeration goes,
so memory stays flat however many items a provider yields. They only count once enumeration has
finished: an enumeration that raises or is killed leaves rows the engine discards, and the cursor
is untouched.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from integrations_dagster.authoring.events import SyncItemEvent
from integrations_dagster.engine.background import BackgroundWriter, InOrder
from integrations_dagster.errors import SyncRunDiscarded, SyncRunStateConflict
from integrations_dagster.status import ItemStatus, RunStatus
from integrations_dagster.store import utcnow

if TYPE_CHECKING:
    from integrations_dagster.authoring.integration import Integration
    from integrations_dagster.engine.apply import WriteApplier
    from integrations_dagster.settings import SyncSettings
    from integrations_dagster.store import Store

_JSON_SCALARS = (str, int, float, bool, type(None))
_dumps = json.dumps
#: ``sync_items.external_id`` is a String(300): a longer id is an invalid item, on every database.
EXTERNAL_ID_MAX = 300
INVALID_PREFIX = "invalid item: "


class SyncSessionClosed(RuntimeError):
    """``dispatch`` was called after the session ended (its enumeration has returned or failed)."""


def _bad_text(s: str) -> str | None:
    """Why PostgreSQL (and JSON) cannot hold ``s``: a NUL character or a lone surrogate; else None."""
    if "\x00" in s:
        return "contains a NUL character (\\x00)"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


def _value_problem(value: Any) -> str | None:
    """Why a JSON value cannot be stored the same way on every database (NaN, NUL, surrogates)."""
    t = type(value)
    if t is str:
        return _bad_text(value)
    if t is float:
        return None if math.isfinite(value) else f"is {value!r}, which JSON cannot hold"
    if t is list:
        for v in value:
            problem = _value_problem(v)
            if problem:
                return problem
        return None
    if t is dict:
        for k, v in value.items():
            problem = _bad_text(k) if isinstance(k, str) else None
            problem = problem or _value_problem(v)
            if problem:
                return problem
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value!r}, which JSON cannot hold"
    return None


def _has_nul_escape(payload: str) -> bool:
    """A ``\\u0000`` escape in JSON text (not an escaped backslash followed by ``u0000``)."""
    start = 0
    while True:
        i = payload.find("\\u0000", start)
        if i < 0:
            return False
        backslashes = 0
        j = i - 1
        while j >= 0 and payload[j] == "\\":
            backslashes += 1
            j -= 1
        if backslashes % 2 == 0:
            return True
        start = i + 1


def safe_text(s: str, limit: int) -> str:
    """``s`` with NUL and lone surrogates escaped, cut to ``limit`` characters (for invalid items)."""
    out = s.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return out if len(out) <= limit else out[: limit - 3] + "..."


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
        self._closed = False
        # dispatch vs. finish (and helper threads vs. each other): nothing is accepted once the
        # session ended, and the chunk of each row and the count stay exact.
        self._lock = threading.Lock()
        self.invalid = 0  # items recorded as invalid at dispatch
        self._http_factory = http_factory
        self._http: Any = None
        # PostgreSQL batches are written in the background while enumeration goes on (see
        # BackgroundWriter); SQLite writes in-process anyway, one writer at a time: synchronous.
        self._background = not store.is_sqlite
        self._writer: BackgroundWriter | None = None  # started at the first batch
        # Several writers (PostgreSQL): their batches take item ids in dispatch order (``InOrder``)
        # and may commit out of order; ``_written`` counts the rows of the batches committed so far
        # with every earlier batch committed too (what the chunk pipeline may hand over).
        self._workers = settings.write_connections if self._background else 1
        self._order: InOrder | None = InOrder() if self._workers > 1 else None
        self._batches = 0  # batches handed to the writer so far (each one's ``seq``)
        self._committed: dict[int, int] = {}  # seq -> rows, committed after a batch not yet committed
        self._committed_upto = 0  # every batch before this seq is committed
        self._commit_lock = threading.Lock()
        self._written = 0  # rows committed so far (in dispatch order)
        #: Called with the number of rows committed after each written batch (on the writer thread):
        #: the engine's chunk pipeline (``engine.pipeline``) hands over the chunks that are complete.
        self.on_written: Callable[[int], None] | None = None
        #: Records each batch (``engine.apply.WriteApplier``: staged listeners applied at write on
        #: PostgreSQL); None: every item is recorded pending.
        self.applier: WriteApplier | None = None
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

    def already_delivered(self, versions: dict[str, Any]) -> set[str]:
        """Of ``versions`` (external id -> checkpoint), the ids an earlier run of this integration
        has already completed with that same checkpoint (success, skipped or superseded).

        For an overlap window: a provider that re-reads the last hours of a stream (late and
        same-second events) dispatches only what is new, or changed (a new checkpoint), and not
        again what was delivered. Failed items are not delivered: they come back. One query per
        thousand ids; items pruned (``integrations prune``, 30 days by default) are forgotten.
        """
        if not versions:
            return set()
        from integrations_dagster.store import items as item_sql

        done = item_sql.completed_versions(self._store, self.integration.id, list(versions), exclude_run=self.run_id)
        return {ext for ext, cp in versions.items() if (ext, _dumps(cp, sort_keys=True)) in done}

    def dispatch(self, event: SyncItemEvent, *, checkpoint_value: Any, external_id: str | int | None = None) -> None:
        """Record one item (its listeners run later, in a mapped step, with retries).

        An item no database can store as given (an external id over 300 characters, a NUL
        character or a lone surrogate in its external id, checkpoint or payload, a NaN or infinite
        checkpoint) is recorded as an invalid item instead: it fails with ``invalid item: ...``,
        holds the cursor like any failure, can be skipped, and the enumeration goes on.
        Raises ``SyncSessionClosed`` once the session has ended (nothing is written).
        """
        if not isinstance(event, SyncItemEvent):
            raise TypeError(f"dispatch() takes a SyncItemEvent, got {type(event).__name__}")
        problem: str | None = None
        bad_checkpoint = False
        if type(checkpoint_value) is str:  # a str is always a JSON value: only its characters need a look
            if "\x00" in checkpoint_value or not checkpoint_value.isascii():
                problem = _bad_text(checkpoint_value)
        elif type(checkpoint_value) is not int and checkpoint_value is not None:
            _check_json(checkpoint_value, "checkpoint_value")
            problem = _value_problem(checkpoint_value)
        if problem:
            bad_checkpoint = True
            problem = f"checkpoint {ascii(checkpoint_value)[:200]} {problem}"
        ext = None if external_id is None else str(external_id)
        if ext is not None and not problem:
            if len(ext) > EXTERNAL_ID_MAX:
                problem = f"external_id is {len(ext)} characters long (at most {EXTERNAL_ID_MAX})"
            elif "\x00" in ext or not ext.isascii():
                bad = _bad_text(ext)
                problem = f"external_id {bad}" if bad else None
        payload = None
        if not problem:
            try:
                payload = event.model_dump_json()
            except (PydanticSerializationError, ValueError) as exc:
                problem = f"payload cannot be stored: {str(exc)[:300]}"
            else:
                if "\\u0000" in payload and _has_nul_escape(payload):
                    problem = "payload contains a NUL character (\\x00)"
        if problem:
            self._dispatch_invalid_item(event, problem, None if bad_checkpoint else checkpoint_value, ext)
            return
        cls = type(event)
        type_name = self._type_names.get(cls)
        if type_name is None:
            type_name = self._type_names[cls] = event_type_name(cls)
        checkpoint_json = _dumps(checkpoint_value)
        with self._lock:  # helper threads may dispatch too; finish() holds this lock while it ends the session
            if self._closed:
                raise SyncSessionClosed(
                    f"sync run {self.run_id}: dispatch() after the session ended (enumeration has returned or "
                    "failed); the item was not recorded. Dispatch only from the provider's sync() before it "
                    "returns, and join helper threads first"
                )
            # A row in Store._ITEM_COLUMNS order; the payload is JSON text straight from pydantic's
            # serializer, stored as is (COPY on PostgreSQL).
            self._buffer.append((
                self.run_id, self.integration.id, self.dispatched // self.chunk_size, ItemStatus.PENDING.value, 0, 0,
                ext, checkpoint_json, type_name, payload, self._stamp,
            ))
            self.dispatched += 1
            if len(self._buffer) >= self._settings.flush_every or (
                self.dispatched > self._settings.max_items_per_batch and not self._warned
            ):
                self._after_accept()

    def _after_accept(self) -> None:
        if self.dispatched > self._settings.max_items_per_batch and not self._warned:
            self._warned = True
            self._log.warning(
                f"{self.integration}: more than max_items_per_batch={self._settings.max_items_per_batch} items "
                "in one run (a soft cap); consider a smaller sync window"
            )
        if len(self._buffer) >= self._settings.flush_every:
            self._write_buffer()

    def _dispatch_invalid_item(self, event: SyncItemEvent, problem: str, checkpoint: Any, ext: str | None) -> None:
        """Record ``event`` as an invalid item: what can be stored safely (escaped repr, escaped id).

        The checkpoint is kept when it is valid; otherwise None, whose place in the order is
        unknown, so the item holds the cursor where it is until it is skipped.
        """
        from integrations_dagster.authoring.events import InvalidPayload

        try:
            shown = ascii(event.model_dump())
        except Exception:  # pragma: no cover - model_dump of a validated model does not fail
            shown = ascii(event)
        message = INVALID_PREFIX + problem
        if isinstance(event, InvalidPayload):  # dispatch_invalid's item was itself unstorable: keep its error
            message = f"{message}; {safe_text(event.error, 2000)}"
        self.invalid += 1
        self._log.warning(f"{self.integration}: sync run {self.run_id}: {message}")
        self.dispatch(
            InvalidPayload(endpoint=None, field=None, error=message[:4000],
                           raw={"event_type": event_type_name(type(event)), "repr": shown[:20000]}),
            checkpoint_value=checkpoint,
            external_id=None if ext is None else safe_text(ext, EXTERNAL_ID_MAX),
        )

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
        from integrations_dagster.authoring.events import InvalidPayload

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
        seq, self._batches = self._batches, self._batches + 1
        if self._background:
            if self._writer is None:
                self._writer = BackgroundWriter("dispatch-writer", workers=self._workers)
            self._writer.submit(self._insert, rows, seq)
        else:
            self._insert(rows, seq)

    def _insert(self, rows: list[tuple[Any, ...]], seq: int) -> None:
        try:
            with self._store.begin() as conn:
                # Only into a run that is still enumerating (checked under a lock in the same
                # transaction): a run discarded meanwhile never gets rows back, and its enumeration
                # fails. The lock is FOR KEY SHARE: parallel writers of the run hold it together.
                status = self._store.run_status(conn, self.run_id, lock=True, key_share=True)
                if status != RunStatus.ENUMERATING:
                    cls = SyncRunDiscarded if status in (None, RunStatus.FAILED) else SyncRunStateConflict
                    raise cls(self.run_id, RunStatus.ENUMERATING, status, "store dispatched items")
                ids = None
                if self._order is not None:  # parallel writers: this batch's ids after the earlier batches'
                    from integrations_dagster.store.items import allocate_item_ids

                    ids = self._order.step(seq, lambda: allocate_item_ids(conn, len(rows)))
                self._record(conn, rows, ids)
        except BaseException:
            if self._order is not None:
                self._order.fail()  # the batches behind this one stop instead of waiting for its ids
            raise
        self._batch_committed(seq, len(rows))

    def _batch_committed(self, seq: int, rows: int) -> None:
        with self._commit_lock:  # (on_written runs under it: the pipeline sees one caller at a time)
            self._committed[seq] = rows
            before = self._written
            while self._committed_upto in self._committed:
                self._written += self._committed.pop(self._committed_upto)
                self._committed_upto += 1
            if self._written != before and self.on_written is not None:
                self.on_written(self._written)

    def _record(self, conn: Any, rows: list[tuple[Any, ...]], ids: list[int] | None = None) -> None:
        """Record ``rows``; ``ids``: their item ids, taken in dispatch order (parallel writers), else
        taken as they are written."""
        if self.applier is not None:
            self.applier.record(conn, rows, utcnow(), ids=ids)
        else:
            self._store.insert_item_rows(conn, rows, ids=ids)

    @property
    def pending_chunks(self) -> list[int] | None:
        """The chunks that have pending items (they need their chunk step), in order; None when every
        item was recorded pending (no applier: every chunk needs its step)."""
        if self.applier is None or not self.applier.active:
            return None
        return sorted(self.applier.pending_chunks)

    def event_classes(self) -> list[type]:
        """The event classes dispatched so far."""
        return list(self._type_names)

    def finish(self, then: Callable[[Any], None] | None = None) -> None:
        """End dispatching (a later ``dispatch`` raises ``SyncSessionClosed``), then write everything.

        ``then(conn)``: runs first in the transaction that writes the last dispatched items (one of its
        own when there are none left), so whatever it records (the engine: the run's end of enumeration,
        a compare-and-set on its status) commits together with those items or not at all; the status
        check of each write is then ``then``'s to make. Earlier batches are written first."""
        with self._lock:
            self._closed = True
            if then is None:
                self.flush()
                return
            if self._writer is not None:
                self._writer.drain()
            rows, self._buffer = self._buffer, []
            with self._store.begin() as conn:
                then(conn)
                self._record(conn, rows)
            self._written += len(rows)  # (not handed to on_written: a pipelined run finishes without then)

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
        with self._lock:
            self._closed = True
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
