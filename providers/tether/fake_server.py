"""A fake Tether server: POST /push answers applied / rejected / conflicts; POST /pull pages snapshots.

Rules (deterministic, for tests and the demo):
- a payload with ``"title": ""`` is rejected ``validation_failed`` with details ``{"title": ["required"]}``;
- a payload with ``"flaky": true`` is rejected ``error`` the first ``error_times`` times it is seen;
- an ``update`` whose ``base_version`` differs from the server's version is a conflict, answered with
  the server's current record;
- mutations are de-duplicated by ``mutation_id`` (a resent applied mutation is answered applied again
  and not applied twice: ``applied_count`` counts distinct applications);
- ``fail_next`` > 0 makes the next requests answer 503 (a transport failure); ``fail_path["/pull"]``
  (or ``"/push"``) only that endpoint's;
Run alone: ``python -m providers.tether.fake_server`` (prints its URL).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TetherState:
    def __init__(self, *, error_times: int = 1, page_size: int = 2) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.seen: dict[str, dict[str, Any]] = {}  # mutation_id -> answer
        self.errors: dict[str, int] = {}
        self.error_times = error_times
        self.page_size = page_size
        self.fail_next = 0
        self.fail_path: dict[str, int] = {}  # "/push" or "/pull" -> how many next requests answer 503
        self.push_requests = 0
        self.received: dict[str, int] = {}  # mutation_id -> how many times it was sent
        # Kill tests: after applying push request number ``hold_after_push``, the answer waits until
        # ``release`` is set (``held`` tells the test the batch is applied and unanswered).
        self.hold_after_push: int | None = None
        self.push_delay = 0.0  # seconds every push answer waits (after applying), for random kills
        self.held = threading.Event()
        self.release = threading.Event()
        self.applied_count = 0
        self.clock = 0  # microsecond-ish cursor: increments per change
        self.changes: list[tuple[int, tuple[str, str]]] = []

    def put(self, entity: str, key: str, data: dict[str, Any]) -> None:
        self.clock += 1
        rec = self.records.get((entity, key), {"version": 0})
        self.records[(entity, key)] = {**data, "version": rec["version"] + 1, "entity": entity, "key": key}
        self.changes.append((self.clock, (entity, key)))

    def push(self, mutations: list[dict[str, Any]]) -> dict[str, Any]:
        applied: list[str] = []
        rejected: list[dict[str, Any]] = []
        conflicts: list[dict[str, Any]] = []
        for m in mutations:
            mid = m["mutation_id"]
            self.received[mid] = self.received.get(mid, 0) + 1
            if mid in self.seen:  # de-duplicated by mutation id
                applied.append(mid)
                continue
            payload = m.get("payload") or {}
            ek = (m["entity"], str(m["key"]))
            current = self.records.get(ek)
            if payload.get("title") == "":
                rejected.append({"mutation_id": mid, "reason": "validation_failed", "details": {"title": ["required"]}})
            elif payload.get("flaky") and self.errors.get(mid, 0) < self.error_times:
                self.errors[mid] = self.errors.get(mid, 0) + 1
                rejected.append({"mutation_id": mid, "reason": "error", "details": "temporary failure"})
            elif m["operation"] == "update" and current and "base_version" in payload and payload["base_version"] != current["version"]:
                conflicts.append({"mutation_id": mid, "server_state": current})
            else:
                data = {k: v for k, v in payload.items() if k not in ("base_version", "flaky")}
                self.put(ek[0], ek[1], data)
                self.applied_count += 1
                self.seen[mid] = {"applied": True}
                applied.append(mid)
        return {"applied": applied, "rejected": rejected, "conflicts": conflicts}

    def pull(self, cursor: int | None) -> dict[str, Any]:
        since = cursor or 0
        latest: dict[tuple[str, str], int] = {}
        for c, ek in self.changes:  # each record once, at its latest change
            latest[ek] = c
        newer = sorted((c, ek) for ek, c in latest.items() if c > since)
        page = newer[: self.page_size]
        snapshots = [self.records[ek] for _, ek in page]
        new_cursor = page[-1][0] if page else since
        return {"snapshots": snapshots, "new_sync_cursor": new_cursor, "has_more": len(newer) > len(page)}


def serve(state: TetherState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with state.lock:
                if self.path == "/push":
                    state.push_requests += 1
                if state.fail_next > 0 or state.fail_path.get(self.path, 0) > 0:
                    if state.fail_next > 0:
                        state.fail_next -= 1
                    else:
                        state.fail_path[self.path] -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                hold = False
                if self.path == "/push":
                    out = state.push(body.get("mutations", []))
                    hold = state.hold_after_push == state.push_requests
                elif self.path == "/pull":
                    out = state.pull(body.get("cursor"))
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
            if self.path == "/push" and state.push_delay:
                time.sleep(state.push_delay)
            if hold:  # applied; the client has not heard back (outside the lock: other requests go on)
                state.held.set()
                state.release.wait(timeout=60)
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    srv = serve(TetherState(), port=0)
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    threading.Event().wait()
