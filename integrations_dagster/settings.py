"""Framework settings: the seed's ``config/integrations.php`` as a pydantic-settings model.

Every field can be set in code (``SyncSettings(item_backoff=[0.01])``) or from the environment with
the ``INTEGRATIONS_`` prefix (``INTEGRATIONS_ITEM_TRIES=3``). Tests use tiny waits; production keeps
the seed's defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_database_url() -> str:
    """SQLite under ``DAGSTER_HOME`` (or ``./.integrations`` when unset): the embedded default."""
    home = os.environ.get("DAGSTER_HOME")
    base = Path(home) if home else Path.cwd() / ".integrations"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'integrations.sqlite'}"


class SyncSettings(BaseSettings):
    """How syncs run. Defaults follow the seed; every wait is overridable for tests."""

    model_config = SettingsConfigDict(env_prefix="INTEGRATIONS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the state store; None means SQLite under DAGSTER_HOME.",
    )
    item_tries: int = Field(default=5, ge=1, description="Genuine listener failures before an item is failed.")
    item_backoff: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 120.0, 300.0, 900.0],
        description="Seconds to wait before retry n (the last value repeats).",
    )
    item_retry_window: float = Field(
        default=21600, gt=0, description="Absolute seconds an item may keep retrying, deferrals included."
    )
    max_items_per_batch: int = Field(default=10_000, ge=1, description="Soft cap: a larger run logs a warning.")
    chunk_size: int = Field(default=1000, ge=1, description="Items per mapped Dagster step.")
    flush_every: int = Field(default=2000, ge=1, description="Dispatched items buffered before one write (COPY).")
    listener_batch_size: int = Field(
        default=1000, ge=1,
        description="Events handed to a batch listener per call; each batch's statuses are written in one statement "
        "(on PostgreSQL while the next batch runs).",
    )
    apply_at_write: bool = Field(
        default=True,
        description="PostgreSQL: a dispatched batch whose event types have staged listeners only is applied by "
        "the enumeration's writer in the transaction that records it, and its items are recorded succeeded "
        "(engine.apply); a batch whose staged call fails is recorded pending for the chunk steps. Off: every item "
        "is recorded pending and processed by its chunk step (INTEGRATIONS_APPLY_AT_WRITE=false).",
    )
    write_connections: int = Field(
        default=2, ge=1, le=8,
        description="PostgreSQL: database connections a big enumeration writes its dispatched batches on at the "
        "same time (each batch's COPY and staged listeners in a transaction of its own; item ids still in dispatch "
        "order). 1: one batch at a time, in order (INTEGRATIONS_WRITE_CONNECTIONS).",
    )
    pipeline_chunks: bool = Field(
        default=False,
        description="PostgreSQL, staged listeners only: a chunk whose items are all written is processed while "
        "the enumeration goes on (engine.pipeline); its chunk step then finds it done. Off by default: on a "
        "2-core machine that also runs the database it costs CPU and gains no time (docs/BENCHMARKS.md, GitHub); "
        "for a sync machine with cores to spare or a database on another host.",
    )
    cursor_rule: Literal["low_water_mark", "strict"] = Field(
        default="low_water_mark",
        description="low_water_mark: a failure holds back only later checkpoints; strict: any failure keeps the cursor.",
    )
    min_deferral: float = Field(
        default=1.0, ge=0,
        description="Shortest wait after a listener raises RateLimited (RateLimited(0) or a negative wait must not "
        "retry in a busy loop).",
    )
    inline_wait_max: float = Field(
        default=1.0,
        ge=0,
        description="Retry waits up to this many seconds sleep inside the step; longer ones hand the step back to "
        "Dagster (RetryRequested) so other steps run meanwhile.",
    )
    one_chunk_in_enumerate: bool = Field(
        default=True,
        description="The partitioned job: a run whose items fit in one chunk runs their listeners in its enumerate "
        "step (the same chunk processing, retries and claim) and settles there, so a small sync is one Dagster "
        "step instead of three (about 11 events less each: docs/BENCHMARKS.md, 'Fixed cost of one sync'). Items "
        "that fail or wait for a retry go on to the chunk step as before (it reports them; 'Re-execute from "
        "failure' retries them).",
    )
    job_timeout: float = Field(
        default=1800, gt=0, description="Seconds after which an enumeration or a processing claim is presumed dead."
    )
    executor: Literal["in_process", "multiprocess", "celery"] = Field(
        default="in_process",
        description="Executor for sync jobs; in-process avoids ~0.6 s per step. celery: every step is a Celery task "
        "run by warm dagster-celery workers (README 'Scaling out').",
    )
    max_concurrent_steps: int = Field(default=4, ge=1, description="multiprocess executor: steps at once.")
    celery_broker: str = Field(
        default="pyamqp://guest:guest@127.0.0.1:5672//", description="celery executor: the broker URL (RabbitMQ)."
    )
    celery_backend: str = Field(default="rpc://", description="celery executor: the result backend.")
    celery_queue: str = Field(
        default="dagster", min_length=1,
        description="celery executor: the queue steps are sent to (workers listen with `-q QUEUE`).",
    )
    sensor_interval_seconds: int = Field(
        default=30, ge=1, description="Minimum seconds between two ticks of each provider's sync sensor."
    )
    sensor_default_running: bool = Field(
        default=True, description="Sync sensors start running by default (so `dagster dev` syncs without clicks)."
    )
    sensor_max_runs_per_tick: int = Field(
        default=100, ge=1, description="Due integrations examined (and runs requested) per sensor tick; the rest "
        "wait for the next tick."
    )

    # --- push direction (issue 13, Tether's defaults) ---
    push_batch_size: int = Field(default=50, ge=1, description="Mutations per push request (Tether's push_batch_size).")
    max_retry_attempts: int = Field(
        default=3, ge=1, description="Pushes of a mutation rejected with reason 'error' before it stays failed."
    )
    auto_sync_throttle: float = Field(
        default=10.0, ge=0, description="Push sensor: seconds between push runs of one integration (coalesces "
        "rapid local writes into one run; Tether's auto_sync_throttle)."
    )
    push_sensor_interval_seconds: int = Field(default=5, ge=1, description="How often the push sensor looks at outboxes.")
    batch_size: int = Field(
        default=200, ge=0, description="Small due integrations per <key>_sync_batch run (a shard, one mapped step "
        "per integration); 0 turns batching off (one <key>_sync run per integration). docs/BENCHMARKS.md, Fleet."
    )
    batch_step_size: int = Field(
        default=10, ge=1, description="Integrations per mapped step of a <key>_sync_batch run: each keeps its own "
        "sync run, cursor and timeline partition; a step's Dagster events (start, input, success) are shared. "
        "1: one step per integration. docs/BENCHMARKS.md, Fleet."
    )
    batch_max_items: int = Field(
        default=2000, ge=0, description="An integration whose last enumerated run had more items than this (or "
        "that never synced) gets its own partitioned <key>_sync run, with its chunks mapped across steps."
    )
    schedule_from: Literal["due", "finish"] = Field(
        default="due", description="Runs the sync sensor launched: the next sync is one interval after the due "
        "time (no drift by queueing and run time), or after the run finished (the interval is a pause)."
    )
    sensor_max_integrations_per_tick: int = Field(
        default=2000, ge=1, description="With batching on: due integrations examined per sensor tick (own runs "
        "are still capped by sensor_max_runs_per_tick)."
    )

    health_max_integrations_per_tick: int = Field(
        default=250, ge=1, description="Health sensor: integrations whose changed check verdicts are recorded per "
        "tick (two Dagster events each; the daemon writes every one on its own); the rest are recorded on the "
        "next ticks, failing verdicts first. docs/SCHEDULING.md, Health checks at scale."
    )

    @field_validator("item_backoff")
    @classmethod
    def _backoff_not_empty(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError("item_backoff needs at least one non-negative number of seconds")
        return value

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url()

    def backoff_for(self, attempt: int) -> float:
        """Wait before the retry that follows genuine failure number ``attempt`` (1-based)."""
        return float(self.item_backoff[min(attempt, len(self.item_backoff)) - 1])
