"""Which process executes a sync run outside the daemon, and whether it is still there.

A run executed in-process (``execute_sync``: ``integrations sync --wait`` without a daemon, ``retry``,
the demo) has no run worker that Dagster's run monitoring watches: when that process is killed the
Dagster run stays ``STARTED`` for ever. So such a run carries the tag ``integrations/owner`` =
``<host>:<pid>:<dagster run id>`` (set right after the run is created), and its sync run records
``owner_host``/``owner_pid``. On the same host a pid that no longer exists (or is a zombie) means the
run is dead; on another host nothing can be told from here (``None``: the callers fall back to
Dagster's run status and the job timeout).

The run id inside the tag value guards against inherited tags: a re-execution copies its parent's
tags, and a copied owner tag (naming another run) is ignored.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

OWNER_TAG = "integrations/owner"


@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int


def this_host() -> str:
    return socket.gethostname()


def current_owner() -> RunOwner:
    return RunOwner(this_host(), os.getpid())


def owner_tag_value(dagster_run_id: str, owner: RunOwner | None = None) -> str:
    owner = owner or current_owner()
    return f"{owner.host}:{owner.pid}:{dagster_run_id}"


def owner_from_tags(tags: Mapping[str, str], dagster_run_id: str | None) -> RunOwner | None:
    """The owner recorded on the run itself (None when absent, malformed or inherited from a parent)."""
    value = tags.get(OWNER_TAG)
    if not value or not dagster_run_id:
        return None
    host, sep, rest = value.partition(":")
    pid_text, sep2, run_id = rest.partition(":")
    if not sep or not sep2 or run_id != dagster_run_id or not pid_text.isdigit():
        return None
    return RunOwner(host, int(pid_text))


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live process on this host (a zombie, killed but not yet reaped, is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def owner_alive(host: str | None, pid: int | None) -> bool | None:
    """False: the owner ran on this host and its process is gone. True: it is still there.
    None: no owner recorded, or another host (cannot tell from here)."""
    if not host or pid is None or host != this_host():
        return None
    return process_exists(int(pid))
