"""A local HTTP API that answers from a script of pages: the bad-input corpus's malformed API.

``ScriptedApi(pages)`` answers the N-th distinct request to ``<path>`` (its URL with the query: a retry of
the same request gets the same page) from ``pages[N-1]``, and ``[]`` after the last, whatever paging the
client does (page numbers, keyset on ``since``, next links); each page carries a GitHub-style
``Link: <...>; rel="next"`` header while a next page exists. A page is a dict:

- ``status`` (default 200), ``headers`` (extra response headers);
- ``items``: a list of issue specs, ``n`` (a well-formed issue number n, see ``issue``),
  ``{"base": n, "set": {...}, "drop": [...]}`` (issue n with fields replaced or removed) or
  ``{"raw": value}`` (any JSON value as the item); serialised with ``json.dumps`` (so a lone surrogate
  becomes the escape ``\\ud800`` and NaN the literal ``NaN``, as a careless API would send them);
- or ``body`` (any JSON value) or ``text`` (the body verbatim, e.g. HTML or truncated JSON);
- ``next``: the page the Link header points to (default N+1 when it exists, ``null``: none); a page
  already served is pointed to by its own URL, which makes a circle.

``pages`` may be replaced between runs (``api.pages = ...``, which also forgets the URLs seen) to "fix"
the API.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SINCE = "2024-01-01T00:00:00Z"
_T0 = datetime(2024, 1, 1, tzinfo=UTC)


def updated_at(n: int) -> str:
    return (_T0 + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue_id(n: int) -> int:
    return 1_000_000 + n


def issue(n: int) -> dict[str, Any]:
    return {"id": issue_id(n), "number": n, "title": f"issue {n}", "state": "open", "user": {"login": "octocat"},
            "labels": [], "created_at": SINCE, "updated_at": updated_at(n),
            "html_url": f"https://github.com/acme/widgets/issues/{n}"}


def item(spec: Any) -> Any:
    if isinstance(spec, int):
        return issue(spec)
    if "raw" in spec:
        return spec["raw"]
    out = issue(spec["base"])
    out.update(spec.get("set", {}))
    for key in spec.get("drop", []):
        out.pop(key, None)
    return out


def good_pages(numbers: list[int], per_page: int = 3) -> list[dict[str, Any]]:
    """Well-formed pages holding ``numbers`` in order."""
    return [{"items": numbers[i:i + per_page]} for i in range(0, len(numbers), per_page)] or [{"items": []}]


class ScriptedApi:
    def __init__(self, pages: list[dict[str, Any]], path: str = "/repos/acme/widgets/issues") -> None:
        self.path = path
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self.pages = pages

    @property
    def pages(self) -> list[dict[str, Any]]:
        return self._pages

    @pages.setter
    def pages(self, pages: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pages = pages
            self._urls: list[str] = []  # distinct request targets in arrival order: page N is _urls[N-1]

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ScriptedApi:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.api = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def answer(self, target: str) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(target)
        parts = urlsplit(target)
        if parts.path != self.path:
            return 404, {"Content-Type": "application/json"}, b'{"message": "Not Found"}'
        with self._lock:
            if target not in self._urls:
                self._urls.append(target)
            number = self._urls.index(target) + 1
            pages, urls = self._pages, list(self._urls)
        if number > len(pages):
            return 200, {"Content-Type": "application/json"}, b"[]"
        page = pages[number - 1]
        headers = {"Content-Type": "application/json", **page.get("headers", {})}
        nxt = page.get("next", number + 1 if number < len(pages) else None)
        if nxt is not None:
            if nxt <= len(urls):
                link = f"{self.url}{urls[nxt - 1]}"
            else:
                query = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"page": str(nxt)}
                link = f"{self.url}{self.path}?" + "&".join(f"{k}={v}" for k, v in query.items())
            headers["Link"] = f'<{link}>; rel="next"'
        if "text" in page:
            body = page["text"].encode("utf-8", "surrogatepass")
        elif "body" in page:
            body = json.dumps(page["body"]).encode()
        else:
            body = json.dumps([item(s) for s in page.get("items", [])]).encode()
        return int(page.get("status", 200)), headers, body


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        status, headers, body = self.server.api.answer(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass
