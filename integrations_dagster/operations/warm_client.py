"""The client half of the warm sync server (``integrations serve``; the server is
``integrations_dagster.orchestration.sync_server``). Standard library only: a ``sync`` that a server
takes never imports Dagster, SQLAlchemy or pydantic in the calling process.

Protocol (one Unix socket connection per command): the client sends one JSON object (the CLI
arguments, the working directory and its *identity*: ``DAGSTER_HOME``, the database URL and definitions
it would use, every other ``INTEGRATIONS_*`` variable) together with its standard input, output and
error file descriptors (``SCM_RIGHTS``). The server compares the identity with its own; on a match it
forks a child of its warm process (Dagster imported, definitions loaded) that runs exactly this
command on the client's descriptors and answers ``{"exit": N}``; otherwise it answers
``{"refused": reason}`` and the client runs the command itself, as if there were no server.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

#: Path of the server's socket; default ``$DAGSTER_HOME/integrations-sync.sock``.
SOCKET_ENV = "INTEGRATIONS_SYNC_SERVER"
SOCKET_NAME = "integrations-sync.sock"
#: Set to 0 to make ``integrations sync`` ignore a running server.
USE_ENV = "INTEGRATIONS_USE_SYNC_SERVER"
_NOT_IDENTITY = (SOCKET_ENV, USE_ENV, "INTEGRATIONS_DATABASE_URL", "INTEGRATIONS_DEFINITIONS")


def socket_path(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV]
    home = env.get("DAGSTER_HOME")
    if not home:
        return None
    path = os.path.join(home, SOCKET_NAME)
    if len(os.fsencode(path)) < 100:  # AF_UNIX paths are limited to 107 bytes
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"integrations-sync-{digest}.sock")


def identity(database_url: str | None, defs_spec: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What must be equal for a server to run a client's command exactly as the client would."""
    env = os.environ if environ is None else environ
    return {
        "dagster_home": os.path.realpath(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None,
        "database_url": database_url or env.get("INTEGRATIONS_DATABASE_URL") or None,
        "defs": defs_spec,
        "env": {k: v for k, v in sorted(env.items()) if k.startswith("INTEGRATIONS_") and k not in _NOT_IDENTITY},
    }


def run_via_server(args: Sequence[str], ident: dict[str, Any]) -> int | None:
    """Run ``integrations ARGS`` in the warm server; its exit code, or None when no server takes it."""
    if os.environ.get(USE_ENV, "1") == "0":
        return None
    path = socket_path()
    if not path or not os.path.exists(path):
        return None
    try:
        fds = [sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, ValueError, OSError):  # captured streams (tests): run here
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # a stale socket file: no server behind it
        sock.close()
        return None
    with sock:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        request = {"args": list(args), "cwd": os.getcwd(), "identity": ident}
        socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], fds)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    if not reply:
        sys.stderr.write("Error: the sync server's worker ended without an answer (killed?); the next "
                         "`integrations sync` reclaims its run\n")
        return 1
    answer = json.loads(reply)
    if "refused" in answer:
        if os.environ.get("INTEGRATIONS_VERBOSE_SYNC_SERVER"):
            sys.stderr.write(f"sync server at {path} refused: {answer['refused']}; running here\n")
        return None
    return int(answer["exit"])
