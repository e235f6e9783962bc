"""SQL over ``sync_items``: claiming a chunk, writing outcomes, the probes and reads reconcile
needs. Functions take the caller's connection where the engine owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, String, Text, any_, bindparam, cast, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from integrations_dagster.status import COMPLETED, SUPERSEDABLE, UNFINISHED, ItemStatus
from integrations_dagster.store import models as m
from integrations_dagster.store.store import Store, chunked

_t = m.sync_items

#: Columns a chunk step reads per claimed item (no payloads: they are read per listener batch,
#: and not at all for staged listeners).
_CLAIM_COLUMNS = (_t.c.id, _t.c.status, _t.c.attempts, _t.c.deferrals, _t.c.first_attempt_at,
                  _t.c.next_attempt_at, _t.c.event_type, _t.c.external_id)


_PG_CLAIM = (f"SELECT {', '.join(c.name for c in _CLAIM_COLUMNS)} FROM sync_items "
             "WHERE run_id = %s AND chunk = %s AND status = ANY(%s) ORDER BY id")


def reopen_failed(conn: Connection, run_id: int, chunk: int) -> int:
    """The chunk's failed items back to pending with fresh attempts (re-execution)."""
    return int(conn.execute(
        update(_t)
        .where(_t.c.run_id == run_id, _t.c.chunk == chunk, _t.c.status == ItemStatus.FAILED)
        .values(status=ItemStatus.PENDING, attempts=0, deferrals=0, first_attempt_at=None, next_attempt_at=None,
                failure_notified=False, finished_at=None)
    ).rowcount)


# Hot-path statements built once (bound parameters ``b_*``): their cache keys are computed once.
_CLAIM = (select(*_CLAIM_COLUMNS)
          .where(_t.c.run_id == bindparam("b_run"), _t.c.chunk == bindparam("b_chunk"), _t.c.status.in_(UNFINISHED))
          .order_by(_t.c.id))
_FAILED_VERSIONS = select(_t.c.id, _t.c.external_id, _t.c.status).where(
    _t.c.integration_id == bindparam("b_integration"), _t.c.status == ItemStatus.FAILED, _t.c.external_id.is_not(None))
_LATEST_SUCCESSES_PG = (
    select(_t.c.external_id, func.max(_t.c.id))
    .where(_t.c.integration_id == bindparam("b_integration"),
           _t.c.external_id == any_(bindparam("b_external_ids", type_=ARRAY(String))),
           _t.c.status == ItemStatus.SUCCESS)
    .group_by(_t.c.external_id)
)
_SUCCEEDED_PG = (
    update(_t).where(_t.c.id == any_(bindparam("b_ids", type_=ARRAY(BigInteger))))
    .values(status=ItemStatus.SUCCESS, attempts=_t.c.attempts + 1, finished_at=bindparam("b_now"), last_error=None,
            next_attempt_at=None)
)


def claim_unfinished(store: Store, conn: Connection, run_id: int, chunk: int, now: datetime) -> list[dict[str, Any]]:
    """The chunk's unfinished items as dicts; on SQLite they are marked ``processing`` (PostgreSQL
    holds the chunk's advisory lock instead, ``store.locks.chunk_lock``).

    On PostgreSQL read through the driver's cursor (plain tuples, in the caller's transaction): a
    chunk of 10,000 items costs half the CPU of SQLAlchemy rows, which matters when the chunk is
    claimed on the pipeline thread beside the enumeration (``engine.pipeline``)."""
    if not store.is_sqlite:
        driver = conn.connection.driver_connection
        if driver is not None:
            cursor = driver.cursor()
            cursor.execute(_PG_CLAIM, (run_id, chunk, [str(st) for st in UNFINISHED]))
            keys = [c.name for c in _CLAIM_COLUMNS]
            return [dict(zip(keys, r, strict=True)) for r in cursor.fetchall()]
    result = conn.execute(_CLAIM, {"b_run": int(run_id), "b_chunk": int(chunk)})
    keys = list(result.keys())
    rows = [dict(zip(keys, r, strict=False)) for r in result]  # Row._mapping per row costs ~10x more
    if store.is_sqlite:
        for ids in chunked([r["id"] for r in rows], 1000):
            conn.execute(update(_t).where(store.id_in(_t.c.id, ids))
                         .values(status=ItemStatus.PROCESSING, claimed_at=now))
    return rows


def write_outcomes(store: Store, successes: Sequence[int], changes: Sequence[dict[str, Any]], now: datetime) -> None:
    """Succeeded ids -> success; ``changes`` (rows keyed ``b_id``, see ``engine.retry``) as given."""
    with store.begin() as conn:
        for ids in chunked(successes, 1000):
            if not store.is_sqlite:
                conn.execute(_SUCCEEDED_PG, {"b_ids": [int(i) for i in ids], "b_now": now})
                continue
            conn.execute(
                update(_t)
                .where(store.id_in(_t.c.id, ids))
                .values(status=ItemStatus.SUCCESS, attempts=_t.c.attempts + 1, finished_at=now, last_error=None,
                        next_attempt_at=None)
            )
        if changes:
            conn.execute(
                update(_t)
                .where(_t.c.id == bindparam("b_id"))
                .values(
                    status=bindparam("status"),
                    attempts=bindparam("attempts"),
                    deferrals=bindparam("deferrals"),
                    first_attempt_at=bindparam("first_attempt_at"),
                    next_attempt_at=bindparam("next_attempt_at"),
                    finished_at=bindparam("finished_at"),
                    last_error=bindparam("last_error"),
                ),
                list(changes),
            )


def payloads(store: Store, ids: Sequence[int]) -> dict[int, Any]:
    """Stored payloads (JSON text) by item id."""
    out: dict[int, Any] = {}
    with store.engine.connect() as conn:
        for part in chunked(ids, 1000):
            out.update(conn.execute(select(_t.c.id, cast(_t.c.payload, Text)).where(store.id_in(_t.c.id, part))).all())
    return out


def has_unfinished(store: Store, run_id: int, *, after_chunk: int | None = None) -> bool:
    """Whether any item of the run is pending or processing (indexed probes; the next chunk first)."""
    unfinished = _t.c.status.in_(UNFINISHED)
    with store.engine.connect() as conn:
        busy = None
        if after_chunk is not None:
            busy = conn.execute(
                select(_t.c.id).where(_t.c.run_id == run_id, _t.c.chunk == after_chunk + 1, unfinished).limit(1)
            ).first()
        if busy is None:
            busy = conn.execute(select(_t.c.id).where(_t.c.run_id == run_id, unfinished).limit(1)).first()
    return busy is not None


def unfinished_chunks(store: Store, run_id: int) -> list[int]:
    """Chunks of the run that still have pending or processing items, in order."""
    with store.engine.connect() as conn:
        return [int(c) for (c,) in conn.execute(
            select(_t.c.chunk).where(_t.c.run_id == run_id, _t.c.status.in_(UNFINISHED)).distinct()
            .order_by(_t.c.chunk))]


def status_counts(conn: Connection, run_id: int) -> dict[str, int]:
    """Items of the run counted by status (only statuses that occur)."""
    return {str(st): int(n) for st, n in conn.execute(
        select(_t.c.status, func.count()).where(_t.c.run_id == run_id).group_by(_t.c.status))}


def held_checkpoints(conn: Connection, run_id: int) -> list[tuple[int, str, Any, str | None]]:
    """(id, status, checkpoint, external_id) of the run's items neither completed nor unfinished."""
    return [(int(i), st, cp, ext) for i, st, cp, ext in conn.execute(
        select(_t.c.id, _t.c.status, _t.c.checkpoint, _t.c.external_id)
        .where(_t.c.run_id == run_id, _t.c.status.notin_(COMPLETED + UNFINISHED))
    )]


def completed_checkpoints(conn: Connection, run_id: int, page: int) -> Iterator[tuple[int, str, Any]]:
    """(id, status, checkpoint) of the run's completed items in id order, streamed ``page`` at a time."""
    stmt = (
        select(_t.c.id, _t.c.status, _t.c.checkpoint)
        .where(_t.c.run_id == run_id, _t.c.status.in_(COMPLETED))
        .order_by(_t.c.id)
        .execution_options(yield_per=page)
    )
    for part in conn.execute(stmt).partitions():
        for i, st, cp in part:
            yield int(i), st, cp


def completed_versions(store: Store, integration_id: int, external_ids: Sequence[str], *,
                       exclude_run: int | None) -> set[tuple[str, str]]:
    """(external id, checkpoint as canonical JSON) of the integration's completed items among
    ``external_ids``, in any run but ``exclude_run`` (what an overlap window may skip)."""
    import json

    out: set[tuple[str, str]] = set()
    with store.engine.connect() as conn:
        for ids in chunked(list(dict.fromkeys(external_ids)), 1000):
            stmt = select(_t.c.external_id, _t.c.checkpoint).where(
                _t.c.integration_id == integration_id, _t.c.external_id.in_(ids), _t.c.status.in_(COMPLETED))
            if exclude_run is not None:
                stmt = stmt.where(_t.c.run_id != exclude_run)
            out.update((ext, json.dumps(cp, sort_keys=True)) for ext, cp in conn.execute(stmt))
    return out


def fail_items(conn: Connection, failures: Sequence[tuple[int, str]], now: datetime) -> None:
    """Fail succeeded items (id, message): their checkpoint cannot be ordered, so they hold the cursor."""
    conn.execute(
        update(_t)
        .where(_t.c.id == bindparam("b_id"), _t.c.status == ItemStatus.SUCCESS)
        .values(status=ItemStatus.FAILED, last_error=bindparam("b_error"), finished_at=now, next_attempt_at=None,
                failure_notified=False),
        [{"b_id": i, "b_error": msg} for i, msg in failures],
    )


def take_unnotified_failures(store: Store, conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """The run's failed items nobody was told about yet (id, external_id, attempts, last_error),
    marked notified in the same transaction."""
    rows = conn.execute(
        select(_t.c.id, _t.c.external_id, _t.c.attempts, _t.c.last_error)
        .where(_t.c.run_id == run_id, _t.c.status == ItemStatus.FAILED, _t.c.failure_notified.is_(False))
    ).all()
    out = [dict(r._mapping) for r in rows]
    for ids in chunked([r["id"] for r in out], 1000):
        conn.execute(update(_t).where(store.id_in(_t.c.id, ids)).values(failure_notified=True))
    return out


def max_string_checkpoint(conn: Connection, run_id: int, below: str | None) -> tuple[bool, Any]:
    """The default reducer (the maximum) done by PostgreSQL when text order is checkpoint order.

    Python's order over plain strings is code point order, and so is ``COLLATE "C"`` over UTF-8
    text. ISO-8601 timestamps with a time zone order by instant (``cursor.checkpoint_key``),
    which is text order only when they all share one shape (``YYYY-MM-DDTHH:MM:SS[.f]Z`` of one
    length); any other mix (``...00Z`` with ``...00.5Z``, offsets), numbers, mixed types or a
    string PostgreSQL cannot hold as text answers ``(False, None)`` and Python reduces.
    """
    # Each row's JSON is parsed once (the subquery; OFFSET 0 keeps PostgreSQL from inlining it).
    is_str = "jt = 'string'"
    # Timestamp-like: what every ISO-8601 timestamp has ('-' 5th, 'T'/'t'/' ' 11th). Those order
    # as text only in the one-length UTC form YYYY-MM-DDTHH:MM:SS[.digits]Z (separators checked
    # by LIKE; a wrong digit in the date or time decides text and instant order alike before
    # the fraction, so only the fraction's digits need a look).
    dateish = f"{is_str} AND substr(s, 5, 1) = '-' AND substr(s, 11, 1) IN ('T', 't', ' ')"
    zform = ("(s LIKE '____-__-__T__:__:__Z' OR (s LIKE '____-__-__T__:__:__._%Z' "
             "AND ltrim(substr(s, 21, length(s) - 21), '0123456789') = ''))")
    completed = ", ".join(f"'{s}'" for s in COMPLETED)
    sql = text(
        "SELECT count(*) FILTER (WHERE jt NOT IN ('string', 'null')), "
        f"count(*) FILTER (WHERE {is_str}), count(*) FILTER (WHERE {dateish}), "
        f"count(*) FILTER (WHERE {dateish} AND {zform}), "
        f"min(length(s)) FILTER (WHERE {dateish}), max(length(s)) FILTER (WHERE {dateish}), "
        f"max(s COLLATE \"C\") FILTER (WHERE {is_str} AND status IN ({completed})"
        + (" AND s COLLATE \"C\" < :below" if below is not None else "")
        + ") FROM (SELECT status, json_typeof(checkpoint) AS jt, checkpoint #>> '{}' AS s "
        "FROM sync_items WHERE run_id = :run_id OFFSET 0) AS cp"
    )
    try:
        with conn.begin_nested():
            others, strings, dates, zforms, shortest, longest, top = conn.execute(
                sql, {"run_id": run_id, "below": below}).one()
    except DBAPIError:  # e.g. a \u0000 escape, which text cannot hold
        return False, None
    if others:
        return False, None
    if dates and not (dates == strings == zforms and shortest == longest):
        return False, None
    return True, top


# --- supersession (engine.supersede decides) ------------------------------------------------------
def latest_successes(conn: Connection, integration_id: int, external_ids: Sequence[str]) -> dict[str, int]:
    """The highest id of a successful item per external id of the integration (index
    ``ix_sync_items_completed_external``, partial: completed items only); external ids without a success are absent.

    On PostgreSQL one statement per 10,000 ids with the ids as one array parameter (``= ANY``): a
    chunk's probe is one round trip with a short, cached statement (measured: about 2x faster than
    IN lists of 500 on a 100,000-issue sync); on SQLite IN lists of 500 (its bound-parameter limit)."""
    out: dict[str, int] = {}
    postgres = conn.dialect.name == "postgresql"
    for part in chunked(list(external_ids), 10_000 if postgres else 500):
        if postgres:
            out.update({str(ext): int(i) for ext, i in conn.execute(
                _LATEST_SUCCESSES_PG, {"b_integration": int(integration_id), "b_external_ids": part})})
            continue
        match = _t.c.external_id.in_(part)
        out.update({str(ext): int(i) for ext, i in conn.execute(
            select(_t.c.external_id, func.max(_t.c.id))
            .where(_t.c.integration_id == integration_id, match, _t.c.status == ItemStatus.SUCCESS)
            .group_by(_t.c.external_id)
        )})
    return out


def failed_versions(conn: Connection, integration_id: int) -> list[tuple[int, str | None, str]]:
    """(id, external_id, status) of the integration's failed items that have an external id."""
    return [(int(i), ext, st) for i, ext, st in conn.execute(_FAILED_VERSIONS, {"b_integration": int(integration_id)})]


def mark_superseded(conn: Connection, superseded: dict[int, int], reasons: dict[int, str], now: datetime) -> list[int]:
    """Unfinished or failed items -> ``superseded`` (compare-and-set on the status); returns the run
    ids whose items changed. ``superseded``: item id -> the id of the version that supersedes it."""
    if not superseded:
        return []
    conn.execute(
        update(_t)
        # or_ of equalities, not IN: an executemany cannot expand an IN list
        .where(_t.c.id == bindparam("b_id"), or_(*(_t.c.status == st for st in SUPERSEDABLE)))
        .values(status=ItemStatus.SUPERSEDED, finished_at=now, next_attempt_at=None,
                skip_reason=bindparam("b_reason")),
        [{"b_id": i, "b_reason": reasons[i]} for i in superseded],
    )
    runs: set[int] = set()
    for part in chunked(list(superseded), 1000):
        runs.update(int(r) for (r,) in conn.execute(
            select(_t.c.run_id).where(_t.c.id.in_(part), _t.c.status == ItemStatus.SUPERSEDED).distinct()))
    return sorted(runs)


def failed_of_chunk(conn: Connection, run_id: int, chunk: int) -> list[tuple[int, str | None, str]]:
    """(id, external_id, status) of the chunk's failed items (before a re-execution reopens them)."""
    return [(int(i), ext, st) for i, ext, st in conn.execute(
        select(_t.c.id, _t.c.external_id, _t.c.status)
        .where(_t.c.run_id == run_id, _t.c.chunk == chunk, _t.c.status == ItemStatus.FAILED)
    )]


def failed_items_of_chunk(conn: Connection, run_id: int, chunk: int) -> list[tuple[int, str | None, str]]:
    """(id, external_id, last_error) of the chunk's failed items, in id order (what a chunk step reports)."""
    return [(int(i), ext, err or "") for i, ext, err in conn.execute(
        select(_t.c.id, _t.c.external_id, _t.c.last_error)
        .where(_t.c.run_id == run_id, _t.c.chunk == chunk, _t.c.status == ItemStatus.FAILED)
        .order_by(_t.c.id)
    )]


def later_versions_possible(conn: Connection, integration_id: int, run_id: int, chunk: int,
                            chunks: int) -> tuple[bool, bool]:
    """The facts ``engine.supersede.probe_needed`` decides on, in one round trip: (a later run of the
    integration exists, an item of this run in this chunk or a later one has succeeded). Items get
    ids in dispatch order, so only those can be later versions of this chunk's items. ``chunks``:
    the run's chunk count (one index probe per chunk on ``ix_sync_items_run_chunk``)."""
    later_run = select(m.sync_runs.c.id).where(
        m.sync_runs.c.integration_id == integration_id, m.sync_runs.c.id > run_id).limit(1).exists()
    later_success = select(_t.c.id).where(
        _t.c.run_id == run_id, _t.c.chunk.in_(list(range(chunk, max(chunks, chunk + 1)))),
        _t.c.status == ItemStatus.SUCCESS).limit(1).exists()
    row = conn.execute(select(later_run, later_success)).one()
    return bool(row[0]), bool(row[1])


# --- applied at write (engine.apply) --------------------------------------------------------------
#: The columns of a row recorded with its id known in advance: ``Store._ITEM_COLUMNS`` plus ``finished_at``.
_WITH_ID_COLUMNS = ("id", *Store._ITEM_COLUMNS, "finished_at")
_COPY_WITH_IDS = f"COPY sync_items ({', '.join(_WITH_ID_COLUMNS)}) FROM STDIN"
_NEXT_IDS = "SELECT nextval(pg_get_serial_sequence('sync_items', 'id')) FROM generate_series(1, %s)"


def savepoint(conn: Connection) -> Any:
    """A ``SAVEPOINT`` in ``conn``'s transaction (context manager: rolled back to it on an exception)."""
    return conn.begin_nested()


def allocate_item_ids(conn: Connection, n: int) -> list[int]:
    """``n`` new ``sync_items`` ids from the table's sequence (PostgreSQL), ascending: a batch
    recorded with them keeps its dispatch order (a later dispatch has a higher id, as with ``COPY``)."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - a checked-out pool connection always has one
        raise RuntimeError("no driver connection")
    cursor = driver.cursor()
    cursor.execute(_NEXT_IDS, (n,))
    return sorted(int(i) for (i,) in cursor.fetchall())


def copy_items_with_ids(conn: Connection, rows: Sequence[tuple[Any, ...]], ids: Sequence[int],
                        succeeded: Sequence[bool], now: datetime) -> None:
    """Record ``rows`` (``Store._ITEM_COLUMNS`` order, as the session builds them) with the given ids
    in one ``COPY`` (PostgreSQL); a row whose ``succeeded`` flag is set is recorded as a success of
    its first attempt (status ``success``, attempts 1, ``finished_at`` = ``now``), the others as given
    (pending)."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - a checked-out pool connection always has one
        raise RuntimeError("no driver connection for COPY")
    done = ItemStatus.SUCCESS.value
    with driver.cursor().copy(_COPY_WITH_IDS) as copy:
        write = copy.write_row
        for i, row, ok in zip(ids, rows, succeeded, strict=True):
            if ok:
                write((i, row[0], row[1], row[2], done, 1, row[5], row[6], row[7], row[8], row[9], row[10], now))
            else:
                write((i, *row, None))
