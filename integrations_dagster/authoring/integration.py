"""The ``Integration`` a provider receives: one configured connection to an external API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Integration(BaseModel):
    """A read-only view of an integration row. Credentials are decrypted but never shown in repr."""

    model_config = ConfigDict(frozen=True)

    id: int
    tenant: str = "default"
    provider_key: str
    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)
    sync_interval_minutes: int | None = None
    sync_cron: str | None = None
    rate_limit: dict[str, Any] | None = None
    cursor: Any = None
    enabled: bool = True
    health: str = "healthy"
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    consecutive_auth_failures: int = 0
    last_synced_at: datetime | None = None
    next_sync_at: datetime | None = None
    last_run_status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __str__(self) -> str:
        return f"integration {self.id} ({self.provider_key}: {self.name})"
