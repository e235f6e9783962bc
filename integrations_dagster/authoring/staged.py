"""``StagedBatch``: what a set-based (``staged=True``) listener receives instead of a list of events.

Why: every dispatched item is already stored, as JSON, in the framework's item table before any
listener runs, which makes that table a staging table (as dlt and Airbyte destinations stage
rows before merging them). A listener whose destination lives in the same database can move a
whole batch with one ``INSERT ... SELECT`` from the staged events, with no round trip of the
payloads through Python; on PostgreSQL that is most of the per-item cost of a batch listener.

The engine treats a staged listener like a batch listener: one call per batch of ready items,
inside a transaction of its own (committed when the listener returns); if the call raises, the
transaction is rolled back and the listener is called once per item to isolate the culprit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Connection, CursorResult

_PG_STAGED = "(SELECT id AS item_id, payload::jsonb AS event FROM sync_items WHERE id = ANY(:_item_ids) OFFSET 0)"
_SQLITE_STAGED = (
    "(SELECT id AS item_id, payload AS event FROM sync_items "
    "WHERE id IN (SELECT value FROM json_each(:_item_ids)))"
)


class StagedBatch:
    """A batch of staged items of one event type, and a connection inside the listener's transaction.

    - ``execute(sql)`` runs SQL in which ``{staged}`` stands for the batch as rows
      ``(item_id, event)``: on PostgreSQL ``event`` is the event as ``jsonb``
      (``event->'issue'->>'title'``); on SQLite it is JSON text (``json_extract(event, '$.issue.title')``).
    - ``events()`` parses the batch into event objects, for anything SQL cannot do.
    """

    def __init__(
        self,
        connection: Connection,
        item_ids: Sequence[int],
        event_type: type,
        *,
        events: Sequence[Any] | None = None,
    ) -> None:
        self.connection = connection
        self.item_ids = list(item_ids)
        self.event_type = event_type
        self._events = list(events) if events is not None else None

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``: the SQL a listener writes depends on it."""
        return self.connection.dialect.name

    def __len__(self) -> int:
        return len(self.item_ids)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        """Run ``sql`` with ``{staged}`` replaced by the batch's ``(item_id, event)`` rows."""
        ids: list[int] | str
        if self.dialect == "postgresql":
            staged, ids = _PG_STAGED, self.item_ids
        else:
            staged, ids = _SQLITE_STAGED, json.dumps(self.item_ids)
        return self.connection.execute(text(sql.replace("{staged}", staged)), {"_item_ids": ids, **(params or {})})

    def events(self) -> list[Any]:
        """The batch as event objects, in item order (parsed from the stored payloads once)."""
        if self._events is None:
            rows: list[Any] = list(self.execute("SELECT s.item_id, CAST(s.event AS TEXT) FROM {staged} AS s").all())
            by_id = {row[0]: row[1] for row in rows}
            event_type = self.event_type
            if not issubclass(event_type, BaseModel):
                raise TypeError(f"{event_type.__name__} is not a pydantic event type: events() cannot parse it")
            parse: Callable[[str], Any] = event_type.model_validate_json
            self._events = [parse(by_id[i]) for i in self.item_ids]
        return list(self._events)

    def __repr__(self) -> str:
        return f"StagedBatch({self.event_type.__name__}, {len(self.item_ids)} items)"
