"""A fake contacts API for tests and the docs' walk-through (real local HTTP server).

``GET /v2/contacts?modified_after=EPOCH&cursor=C&limit=N`` with header ``X-Api-Key``: contacts
with ``modified >= modified_after`` in (modified, id) order, ``{"data": {"contacts": [...]},
"paging": {"next": C, "has_more": bool}}``; 401 without the key. ``touch(n)`` modifies n contacts.
Run alone: ``python -m providers.contacts.fake_api --port 8790 --contacts 500``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeContacts:
    def __init__(self, *, contacts: int = 120, api_key: str = "key-123", start: int = 1_700_000_000,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.clock = start
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.contacts: dict[str, dict[str, Any]] = {}
        for i in range(1, contacts + 1):
            self._put(i)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                code, body = outer.handle(self.path, self.headers.get("X-Api-Key"))
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _put(self, i: int) -> None:
        self.clock += 1
        cid = f"c-{i:05d}"
        self.contacts[cid] = {
            "contact_id": cid, "email": f"person{i}@example.test",
            "name": {"first": f"First{i}", "last": f"Last{i}"},
            "tags": [{"label": "vip"}, {"label": f"t{i % 3}"}] if i % 5 == 0 else [{"label": f"t{i % 3}"}],
            "vip": i % 5 == 0, "modified": self.clock,
        }

    def touch(self, n: int) -> list[str]:
        with self._lock:
            ids = sorted(self.contacts)[:n]
            for cid in ids:
                self._put(int(cid[2:]))
            return ids

    def handle(self, target: str, key: str | None) -> tuple[int, Any]:
        parts = urlsplit(target)
        with self._lock:
            self.requests.append(target)
            if key != self.api_key:
                return 401, {"error": "missing or wrong X-Api-Key"}
            if parts.path != "/v2/contacts":
                return 404, {"error": "not found"}
            q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            after = int(float(q.get("modified_after", 0)))
            limit = min(100, int(q.get("limit", 50)))
            rows = sorted((c for c in self.contacts.values() if c["modified"] >= after),
                          key=lambda c: (c["modified"], c["contact_id"]))
            offset = int(q.get("cursor", "0") or 0)
            page = rows[offset: offset + limit]
            more = offset + limit < len(rows)
            return 200, {"data": {"contacts": page}, "paging": {"next": str(offset + limit) if more else None,
                                                                "has_more": more}}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeContacts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="fake-contacts")
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--contacts", type=int, default=500)
    ap.add_argument("--api-key", default="key-123")
    args = ap.parse_args()
    fake = FakeContacts(contacts=args.contacts, api_key=args.api_key, port=args.port)
    print(f"fake contacts API at {fake.url} (X-Api-Key: {args.api_key})", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
