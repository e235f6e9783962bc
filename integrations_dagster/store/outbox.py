"""The transactional outbox's SQL (issue 13). Decisions are in ``engine/push.py``.

``record(conn, ...)`` writes a mutation in the *caller's* transaction: when the app's tables live in
this database, the local write and its mutation commit or roll back together. ``record_now`` is the
plain call for apps whose tables live elsewhere (its own transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, exists, func, select, update

from integrations_dagster.engine.push import Decision, Mutation, MutationStatus
from integrations_dagster.store.models import outbox as t
from integrations_dagster.store.store import Store, utcnow

OPERATIONS = frozenset({"create", "update", "delete"})
_BLOCKING = (MutationStatus.PENDING.value, MutationStatus.FAILED.value, MutationStatus.CONFLICT.value)


class OutboxError(ValueError):
    """A mutation that cannot be recorded (nothing was written)."""


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        conn: Connection,
        integration_id: int,
        *,
        entity: str,
        key: str | int,
        operation: str,
        payload: Any = None,
        mutation_id: str | None = None,
    ) -> str:
        """Record one local mutation in ``conn``'s transaction; returns its mutation id."""
        if operation not in OPERATIONS:
            raise OutboxError(f"operation must be one of {sorted(OPERATIONS)}, got {operation!r}")
        if not entity or key is None or str(key) == "":
            raise OutboxError("a mutation needs an entity and a key")
        mid = mutation_id or uuid.uuid4().hex
        conn.execute(
            t.insert().values(
                integration_id=integration_id,
                mutation_id=mid,
                entity=entity,
                entity_key=str(key),
                operation=operation,
                payload=payload,
                status=MutationStatus.PENDING.value,
                attempts=0,
                created_at=utcnow(),
            )
        )
        return mid

    def record_now(self, integration_id: int, **kw: Any) -> str:
        with self.store.begin() as conn:
            return self.record(conn, integration_id, **kw)

    def eligible(self, integration_id: int, *, limit: int, exclude: Iterable[int] = ()) -> list[Mutation]:
        """Pending mutations in id order, each the first unfinished one of its key."""
        earlier = t.alias("earlier")
        blocked = exists().where(
            and_(
                earlier.c.integration_id == t.c.integration_id,
                earlier.c.entity == t.c.entity,
                earlier.c.entity_key == t.c.entity_key,
                earlier.c.id < t.c.id,
                earlier.c.status.in_(_BLOCKING),
            )
        )
        stmt = select(t).where(t.c.integration_id == integration_id, t.c.status == MutationStatus.PENDING.value, ~blocked)
        ex = list(exclude)
        if ex:
            stmt = stmt.where(t.c.id.not_in(ex))
        with self.store.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(t.c.id).limit(limit)).mappings().all()
        return [_mutation(r) for r in rows]

    def undelivered_conflicts(self, integration_id: int) -> list[Mutation]:
        """Conflicts whose server state no run has delivered as a tracked item yet (id order)."""
        stmt = select(t).where(
            t.c.integration_id == integration_id, t.c.status == MutationStatus.CONFLICT.value,
            t.c.delivered_run_id.is_(None),
        )
        with self.store.engine.connect() as conn:
            return [_mutation(r) for r in conn.execute(stmt.order_by(t.c.id)).mappings()]

    @staticmethod
    def mark_delivered(conn: Connection, ids: Iterable[int], run_id: int) -> None:
        """In the transaction that ends the run's enumeration: these conflicts' states are its items."""
        ids = list(ids)
        if ids:
            conn.execute(update(t).where(t.c.id.in_(ids), t.c.delivered_run_id.is_(None)).values(delivered_run_id=run_id))

    def run_rejections(self, run_id: int) -> list[dict[str, Any]]:
        """Mutations a run's push left failed (rejected), id order."""
        stmt = select(t).where(t.c.sync_run_id == run_id, t.c.status == MutationStatus.FAILED.value)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(t.c.id)).mappings()]

    def pending_integrations(self) -> dict[int, Any]:
        """Integration id -> when its oldest pending mutation was recorded (for the push sensor)."""
        stmt = (
            select(t.c.integration_id, func.min(t.c.created_at))
            .where(t.c.status == MutationStatus.PENDING.value)
            .group_by(t.c.integration_id)
        )
        with self.store.engine.connect() as conn:
            return {int(i): at for i, at in conn.execute(stmt)}

    def pending_for_provider(self, provider_key: str) -> dict[int, Any]:
        """Enabled integrations of ``provider_key`` with pending mutations -> their oldest one's time
        (the push sensor's one query)."""
        from integrations_dagster.store.models import integrations as i

        stmt = (
            select(t.c.integration_id, func.min(t.c.created_at))
            .join(i, i.c.id == t.c.integration_id)
            .where(t.c.status == MutationStatus.PENDING.value, i.c.provider_key == provider_key, i.c.enabled.is_(True))
            .group_by(t.c.integration_id)
            .order_by(t.c.integration_id)
        )
        with self.store.engine.connect() as conn:
            return {int(iid): at for iid, at in conn.execute(stmt)}

    def get(self, mutation_pk: int) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == mutation_pk)).mappings().first()
        if row is None:
            raise OutboxError(f"mutation {mutation_pk} not found")
        return dict(row)

    def record_outcomes(self, decisions: Mapping[int, Decision], *, run_id: int | None = None) -> None:
        if not decisions:
            return
        now = utcnow()
        stmt = (
            update(t)
            .where(t.c.id == bindparam("mid"), t.c.status == MutationStatus.PENDING.value)
            .values(
                status=bindparam("new_status"),
                attempts=t.c.attempts + 1,
                reason=bindparam("new_reason"),
                details=bindparam("new_details"),
                server_state=bindparam("new_server_state"),
                finished_at=bindparam("new_finished_at"),
                sync_run_id=run_id,
                delivered_run_id=None,  # a new conflict's state is delivered by this run's enumeration
            )
        )
        rows = [
            {"mid": mid, "new_status": d.status.value, "new_reason": d.reason, "new_details": d.details,
             "new_server_state": d.server_state,
             "new_finished_at": now if d.status is not MutationStatus.PENDING else None}
            for mid, d in decisions.items()
        ]
        with self.store.begin() as conn:
            conn.execute(stmt, rows)  # one executemany for the whole batch

    def counts(self, integration_id: int) -> dict[str, int]:
        out = {s.value: 0 for s in MutationStatus}
        with self.store.engine.connect() as conn:
            for status, n in conn.execute(
                select(t.c.status, func.count()).where(t.c.integration_id == integration_id).group_by(t.c.status)
            ):
                out[status] = n
        return out

    def list(self, integration_id: int | None = None, *, statuses: Iterable[str] = ("failed", "conflict")) -> list[dict[str, Any]]:
        stmt = select(t).where(t.c.status.in_(list(statuses)))
        if integration_id is not None:
            stmt = stmt.where(t.c.integration_id == integration_id)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(t.c.id)).mappings()]

    def retry(self, ids: Iterable[int]) -> int:
        """Failed or conflicting mutations back to pending (attempts reset); returns how many."""
        return self._move(ids, ("failed", "conflict"), MutationStatus.PENDING, reset=True)

    def skip(self, ids: Iterable[int], *, reason: str | None = None) -> int:
        """Give up on failed or conflicting mutations: finished, they no longer block their key."""
        return self._move(ids, ("failed", "conflict"), MutationStatus.SKIPPED, reset=False,
                          extra={"skip_reason": reason})

    def counts_by_integration(self, ids: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
        """Per integration, mutations per status (one grouped query)."""
        stmt = select(t.c.integration_id, t.c.status, func.count()).group_by(t.c.integration_id, t.c.status)
        if ids is not None:
            stmt = stmt.where(t.c.integration_id.in_(list(ids)))
        out: dict[int, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            for iid, status, n in conn.execute(stmt):
                out.setdefault(int(iid), {s.value: 0 for s in MutationStatus})[status] = int(n)
        return out

    def _move(self, ids: Iterable[int], from_: tuple[str, ...], to: MutationStatus, *, reset: bool,
              extra: dict[str, Any] | None = None) -> int:
        values: dict[str, Any] = {"status": to.value, **(extra or {})}
        if reset:
            values.update(attempts=0, finished_at=None, reason=None, details=None, skip_reason=None)
        with self.store.begin() as conn:
            res = conn.execute(update(t).where(t.c.id.in_(list(ids)), t.c.status.in_(from_)).values(**values))
            return res.rowcount or 0


def _mutation(r: RowMapping) -> Mutation:
    return Mutation(r["id"], r["mutation_id"], r["entity"], r["entity_key"], r["operation"], r["payload"],
                    r["attempts"], r["server_state"])
