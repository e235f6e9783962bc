"""A job whose op prints (tests/test_compute_logs.py: what the compute-log manager captures)."""

from __future__ import annotations

from dagster import in_process_executor, job, op


@op
def print_something() -> None:
    print("printed by an op", flush=True)  # noqa: T201


@job(executor_def=in_process_executor)
def printing_job() -> None:
    print_something()
