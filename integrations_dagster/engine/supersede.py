"""Superseded items, as pure functions (issue 9 point 2).

An item is *superseded* when a later version of the same external id of the same integration
has succeeded, in the same run (an item dispatched twice because it changed while the provider
paged) or in a later run. Later means dispatched later: a higher item id (ids grow with dispatch
order, within a run and across runs). Running the older version again would overwrite the newer
data with the older, so a superseded item is never run again (not by a retry inside a chunk step,
``retry-item``, "retry failed items" or a re-execution): it is finished, counts as completed (it
holds no cursor) and is shown as ``superseded`` to operators.

Only an unfinished or failed item can be superseded (``SUPERSEDABLE``); only a ``success``
supersedes (a skipped later version was never applied, so the older one is still the newest data
the destination may get). The store answers the latest successful id per external id
(``store.items.latest_successes``); these functions decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from integrations_dagster.status import SUPERSEDABLE

if TYPE_CHECKING:
    from sqlalchemy import Connection


class Version(NamedTuple):
    """One item as supersession sees it."""

    id: int
    external_id: str | None
    status: str


def candidates(items: Iterable[Version]) -> list[str]:
    """The external ids worth asking the store about: those of items that may be superseded."""
    return sorted({it.external_id for it in items if it.external_id is not None and it.status in SUPERSEDABLE})


def supersessions(items: Iterable[Version], latest_success: Mapping[str, int]) -> dict[int, int]:
    """Item id -> id of the later successful version that supersedes it (only superseded items).

    ``latest_success``: the highest id of a successful item per external id (the integration's).
    """
    out: dict[int, int] = {}
    for it in items:
        if it.external_id is None or it.status not in SUPERSEDABLE:
            continue
        later = latest_success.get(it.external_id)
        if later is not None and later > it.id:
            out[it.id] = later
    return out


def probe_needed(*, reopening: bool, enumerating: bool, later_run: bool, later_success: bool) -> bool:
    """Whether the superseded-items probe at a chunk's claim can find anything (else it is skipped,
    and no ``Version`` of the chunk's items is built).

    A later version of an item has a higher id: it is in this run, in the same chunk or a later one,
    or in a later run of the integration. So the probe is needed only when re-executing (failed
    items of any age are reopened), or when a later run exists (``later_run``), or when an item of
    this run in this chunk or a later one has already succeeded (``later_success``). A chunk
    processed while its run is still enumerating (``engine.pipeline``) never needs it: single
    flight admits no later run then, and the pipeline takes the run's chunks in order, so a later
    version in this run is still pending.
    """
    if reopening:
        return True
    if enumerating:
        return False
    return later_run or later_success


def reason(later_id: int) -> str:
    """What a superseded item records (``sync_items.skip_reason``)."""
    return (f"superseded by sync item {later_id}: a later version of the same external id succeeded, "
            "so this older version is not applied again")


# --- applied (the SQL is in store.items) ----------------------------------------------------------
def supersede(conn: Connection, integration_id: int, items: Iterable[Version], now: datetime) -> tuple[set[int], list[int]]:
    """Mark the superseded ones of ``items`` (ids of one integration) in the caller's transaction.

    Returns (the superseded item ids, the run ids whose items changed).
    """
    from integrations_dagster.store import items as item_sql

    items = list(items)
    ext_ids = candidates(items)
    if not ext_ids:
        return set(), []
    found = supersessions(items, item_sql.latest_successes(conn, integration_id, ext_ids))
    if not found:
        return set(), []
    runs = item_sql.mark_superseded(conn, found, {i: reason(later) for i, later in found.items()}, now)
    return set(found), runs


def supersede_failed(conn: Connection, integration_id: int, now: datetime) -> list[int]:
    """Supersede the integration's failed items that a later success made moot; the runs changed."""
    from integrations_dagster.store import items as item_sql

    versions = [Version(i, ext, st) for i, ext, st in item_sql.failed_versions(conn, integration_id)]
    return supersede(conn, integration_id, versions, now)[1]
