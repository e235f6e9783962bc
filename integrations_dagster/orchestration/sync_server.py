"""The warm sync server: ``integrations serve`` (issue 11 point 3, the fixed cost of one sync).

A plain ``integrations sync ID --wait`` pays, before its one HTTP request, for a Python start,
``import dagster`` (2-4 s on our 2-core machines), loading the definitions and opening the Dagster
instance. This process pays that once: it imports Dagster and the CLI, loads the definitions, opens
the instance and our store once (then closes every connection, so none crosses a fork), and listens on
a Unix socket (``$DAGSTER_HOME/integrations-sync.sock``, or ``$INTEGRATIONS_SYNC_SERVER``).

``integrations sync`` (the client half: ``operations/warm_client.py``, standard library only) sends its
arguments and its stdin/stdout/stderr descriptors; when the client's identity (``DAGSTER_HOME``,
database URL, definitions, ``INTEGRATIONS_*`` variables) equals this server's, the server ``fork``s and
the child runs exactly the same CLI command on the client's descriptors, in the client's working
directory, then reports the exit code. So the run is the one the CLI makes without a server: the same
de-duplicated sync-now (``request_sync``: the daemon's queue when a daemon runs, else executed in the
process, with the workspace's remote origin so the UI can re-execute it), the same progress lines and
``--json`` output, the same exit code. Only the process that executes it is a fork of a warm one.

A child per command: runs are isolated from each other and from the server (a crashing or killed run
takes only its child; the client reports it and the next sync reclaims the run, as after a killed
``sync --wait``). A mismatched identity is refused and the client runs the command itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from integrations_dagster.operations.warm_client import USE_ENV, identity, socket_path


def _warm_up(database_url: str | None, defs_spec: str) -> None:
    """Import and open everything a sync touches once, then close every connection."""
    from integrations_dagster import cli
    from integrations_dagster.operations import actions, progress  # noqa: F401
    from integrations_dagster.orchestration import reexecutable, request  # noqa: F401
    from integrations_dagster.store import Store

    env = cli.Env(database_url, defs_spec, None, False)
    env.runs_jobs = True
    _ = env.engine  # imports Dagster and loads the definitions (cached for every child)
    _ = env.store  # migrations checked once
    # The instance is opened once and kept: each forked child uses it (``Env.warm_instance``). Dagster's
    # storages hold no open connection between calls (SQLite and dagster-postgres use NullPool), so none
    # crosses a fork; a child disposes its copy when its command ends.
    instance = env.instance()
    instance.get_runs(limit=1)
    cli.Env.warm_instance = (os.environ["DAGSTER_HOME"], instance)
    from integrations_dagster.orchestration.reexecutable import workspace_location_origin

    workspace_location_origin(env.ref)
    # The HTTP stack a sync's client needs: httpx imports httpcore at its first client, and the TLS
    # context loads the CA bundle (tens of milliseconds each, otherwise paid by every child).
    from integrations_dagster.http import ApiClient

    ApiClient(base_url="https://localhost").close()
    Store.forget_all()  # no pooled database connection is shared with a forked child
    # What the warm-up made lives as long as the server: no child's collections walk it.
    import gc

    from integrations_dagster.orchestration.in_process import freeze_long_lived_objects

    gc.collect()  # garbage of the warm-up first: frozen, it would never be collected
    freeze_long_lived_objects()


def _child(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """In the forked child: become the client's command, then report its exit code. Never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ[USE_ENV] = "0"  # this child runs the command itself
        from integrations_dagster import cli

        try:
            cli.cli.main(args=list(request["args"]), prog_name="integrations", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # report, never let the child return into the server's loop
        try:
            sys.stderr.write(f"Error: sync server worker: {type(exc).__name__}: {exc}\n")
        except Exception:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        except OSError:
            pass
        os._exit(0)


def serve(*, database_url: str | None, defs_spec: str, path: str | None = None,
          ready: Any = None) -> None:
    """Warm up, then serve ``integrations sync`` commands until SIGTERM/SIGINT (see the module docstring)."""
    if not os.environ.get("DAGSTER_HOME"):
        raise RuntimeError("DAGSTER_HOME is not set: the server serves the Dagster instance of one home folder")
    own = identity(database_url, defs_spec)  # before the warm-up exports the resolved database URL
    sock_path = path or socket_path()
    assert sock_path is not None
    _warm_up(database_url, defs_spec)
    if threading.active_count() != 1:  # a thread would not survive fork in the children
        names = [t.name for t in threading.enumerate()]
        raise RuntimeError(f"threads running after warm-up ({names}); the server forks and needs none")
    Path(sock_path).unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    os.chmod(sock_path, 0o600)  # the same user only: a client hands over its descriptors
    server.listen(64)
    stopping = {"now": False}

    def _stop(_signum: int, _frame: Any) -> None:
        stopping["now"] = True
        server.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print(f"sync server ready on {sock_path} (pid {os.getpid()})", file=ready or sys.stdout, flush=True)
    try:
        while not stopping["now"]:
            try:
                conn, _ = server.accept()
            except OSError:
                break
            fds: list[int] = []
            try:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
                while not msg.endswith(b"\n"):
                    more = conn.recv(1 << 20)
                    if not more:
                        break
                    msg += more
                request = json.loads(msg)
                reason = None
                if len(fds) != 3:
                    reason = "expected stdin, stdout and stderr descriptors"
                elif request.get("identity") != own:
                    reason = "different DAGSTER_HOME, database, definitions or INTEGRATIONS_* settings"
                if reason:
                    conn.sendall(json.dumps({"refused": reason}).encode() + b"\n")
                    continue
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                if os.fork() == 0:
                    server.close()
                    _child(conn, fds, request)
            except Exception as exc:  # a bad request must not stop the server
                print(f"sync server: bad request: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                conn.close()
    finally:
        Path(sock_path).unlink(missing_ok=True)
