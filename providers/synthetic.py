"""A deterministic synthetic provider for tests, the demo and benchmarks.

Integration metadata:
- ``items`` (int, default 100): how many items exist; item ``i`` has checkpoint ``i`` (zero-padded
  string ``"000042"`` so checkpoints order as strings and numbers alike) and external id ``item-i``.
- ``fail_external_ids`` (list[str]): items whose listener in the demo app always fails (failure
  injection by external id; the listener reads it from the event).
- ``fail_enumeration_after`` (int): raise after dispatching that many items (enumeration failure).

Incremental: only items with a checkpoint above the cursor are dispatched.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from integrations_dagster import Integration, Provider, SyncItemEvent, SyncSession


class SyntheticMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = Field(default=100, ge=0)
    fail_external_ids: list[str] = []
    fail_enumeration_after: int | None = Field(default=None, ge=0)


class SyntheticCredentials(BaseModel):
    """The synthetic API needs none; a ``token`` is accepted (tests check it never leaks)."""

    model_config = ConfigDict(extra="forbid")
    token: str | None = None


class SyntheticItem(SyncItemEvent):
    integration_id: int
    index: int
    external_id: str
    value: str
    poisoned: bool = False


def checkpoint_for(index: int) -> str:
    return f"{index:08d}"


class SyntheticProvider(Provider):
    key = "synthetic"
    default_sync_interval = 1
    metadata_model = SyntheticMetadata
    credentials_model = SyntheticCredentials

    def sync_incremental(self, integration: Integration, session: SyncSession) -> None:
        meta = integration.metadata
        poisoned = set(meta.get("fail_external_ids", []))
        fail_after = meta.get("fail_enumeration_after")
        start = 0 if session.cursor is None else int(session.cursor) + 1
        for i in range(start, int(meta.get("items", 100))):
            if fail_after is not None and i - start >= int(fail_after):
                raise RuntimeError(f"synthetic enumeration failure after {fail_after} items")
            ext = f"item-{i}"
            session.dispatch(
                SyntheticItem(integration_id=integration.id, index=i, external_id=ext, value=f"value {i}",
                              poisoned=ext in poisoned),
                checkpoint_value=checkpoint_for(i),
                external_id=ext,
            )
