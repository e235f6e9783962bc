"""Helpers for the scheduler tests: a controllable clock and real sensor ticks on a real instance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import AddDynamicPartitionsRequest, DagsterInstance, DeleteDynamicPartitionsRequest, build_sensor_context

T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Tick:
    result: Any
    log: list[str] = field(default_factory=list)

    @property
    def run_requests(self) -> list[Any]:
        return list(self.result.run_requests or [])

    @property
    def requested(self) -> list[int]:
        """Integrations requested: own runs (their partition) and batch runs' members, in request order."""
        out: list[int] = []
        for r in self.run_requests:
            out.extend([int(r.partition_key)] if r.partition_key is not None else self.members(r))
        return out

    @property
    def own_runs(self) -> list[int]:
        return [int(r.partition_key) for r in self.run_requests if r.partition_key is not None]

    @property
    def batches(self) -> list[list[int]]:
        return [self.members(r) for r in self.run_requests if r.partition_key is None]

    @staticmethod
    def members(request: Any) -> list[int]:
        from integrations_dagster.orchestration.batch import batch_members

        return batch_members(request.tags["integrations/provider"], request.run_config)

    @property
    def cursor(self) -> str | None:
        return self.result.cursor

    def log_mentions(self, text: str) -> bool:
        return any(text in line for line in self.log)


def tick(defs: Any, instance: DagsterInstance, provider_key: str = "synthetic", cursor: str | None = None,
         apply: bool = True) -> Tick:
    """Evaluate the provider's sync sensor once, as the daemon would, and (optionally) apply its
    dynamic-partition requests to the instance the way the daemon does after a tick."""
    sensor = defs.resolve_sensor_def(f"{provider_key}_sync_sensor")
    context = build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, cursor=cursor,
                                   resources=defs.resources)
    capture = _Capture()
    context.log.addHandler(capture)
    try:
        result = sensor.evaluate_tick(context)
    finally:
        context.log.removeHandler(capture)
    if apply:
        for req in result.dynamic_partitions_requests or []:
            if isinstance(req, AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            elif isinstance(req, DeleteDynamicPartitionsRequest):
                for key in req.partition_keys:
                    instance.delete_dynamic_partition(req.partitions_def_name, key)
    return Tick(result=result, log=capture.lines)
