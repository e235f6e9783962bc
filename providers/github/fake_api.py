"""A fake GitHub REST API on a real local socket, for tests, the demo and benchmarks.

Why a real server rather than ``httpx.MockTransport``: the sync engine, Dagster runs and the
benchmarks must exercise real sockets, keep-alive, timeouts and concurrency. Only the stdlib is
used, so it can run anywhere the package runs (``python -m providers.github.fake_api``).

Speed: issues are generated once and kept as pre-serialized JSON strings; each ordering
(state x sort) is a cached index list with a parallel key list, so ``since`` is a bisect and a
page is a slice plus a ``",".join``: no per-request O(N) work except the first request of a
new ``(state, sort=created, since)`` combination, whose result is cached.

Faults: ``fail_next`` (429 / 403 secondary limit / 5xx), ``slow``, ``malformed_issue_ids``,
a configurable primary rate limit (``rate_limit`` per ``rate_limit_window`` seconds), plus
``bump`` / ``add_issues`` to create work for the next incremental sync, and ``edit_while_listing``
to edit issues in the middle of a listing (they move to its end, the issues after them move up one
place: what page-number paging over ``sort=updated`` loses).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

_ISO = "%Y-%m-%dT%H:%M:%SZ"
_WORDS = (
    "crash", "login", "export", "widget", "flaky", "test", "docs", "typo", "memory", "leak",
    "timeout", "cache", "sync", "render", "button", "api", "build", "deploy", "slow", "query",
)
_LABELS = ("bug", "enhancement", "documentation", "question", "good first issue", "wontfix")
_USERS = ("octocat", "hubot", "monalisa", "defunkt", "mojombo", "pjhyett", "wycats")
_EVENT_TYPES = ("PushEvent", "IssuesEvent", "IssueCommentEvent", "PullRequestEvent", "WatchEvent")
_REASONS = ("assign", "author", "comment", "mention", "review_requested", "subscribed")
_SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


_DAY_CACHE: dict[int, str] = {}


def _iso(ts: float) -> str:
    """``%Y-%m-%dT%H:%M:%SZ`` for epoch seconds; the date part is cached (hot in generation)."""
    day, sec = divmod(int(ts), 86400)
    date = _DAY_CACHE.get(day)
    if date is None:
        date = _DAY_CACHE[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
    return f"{date}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}Z"


def _parse_since(value: str) -> str | None:
    """Normalise an ISO-8601 ``since`` to the server's ``%Y-%m-%dT%H:%M:%SZ`` form.

    Sub-second precision is rounded *up* so that ``>= since`` never returns an item that is
    strictly older than what the client asked for.
    """
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = dt.timestamp()
    return _iso(math.ceil(ts))


@dataclass(slots=True)
class _Issue:
    id: int
    number: int
    title: str
    state: str
    user: str
    labels: list[str]
    created: float
    updated: float
    body: str
    created_at: str = ""
    updated_at: str = ""
    json: str = ""


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    path_prefix: str | None


class FakeGitHub:
    """A subset of GitHub's REST API with deterministic data and switchable faults.

    Use ``with FakeGitHub(issues=1000) as gh: ... gh.url ...``. Issue ``number`` runs from 1;
    ``id`` is ``1_000_000 + number`` (``issue_id(number)``) so ids and numbers never get mixed
    up silently. ``now`` anchors the generated timestamps (default: the current time, whole
    seconds); ``clock`` gives the time used by ``bump``/``add_issues`` (default: ``now``, then
    always strictly after the newest issue, so an incremental sync sees every bumped issue).
    """

    def __init__(
        self,
        *,
        issues: int = 100,
        owner: str = "acme",
        repo: str = "widgets",
        token: str = "test-token",
        seed: int = 0,
        port: int = 0,
        host: str = "127.0.0.1",
        now: datetime | None = None,
        login: str = "octocat",
        notifications: int = 50,
        events: int = 90,
        rate_limit: int = 5000,
        rate_limit_window: float = 3600.0,
    ) -> None:
        self.owner = owner
        self._html_prefix = json.dumps(f"https://github.com/{owner}/{repo}/issues/")[1:-1]
        self.repo = repo
        self.token = token
        self.login = login
        self.host = host
        self.port = port
        anchor = now or datetime.now(UTC)
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        self.now = anchor.replace(microsecond=0)
        self.clock: Callable[[], datetime] = lambda: self.now
        self.malformed_issue_ids: set[int] = set()
        self.delay = 0.0
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._requests: list[tuple[str, str]] = []
        self._request_times: list[float] = []  # epoch seconds of receipt, for rate-limit accuracy checks
        self._faults: list[_Fault] = []
        self._listing_edits: list[list[Any]] = []  # [issue pages still to serve, issue ids] (edit_while_listing)
        self.listing_edits_done: list[list[int]] = []  # ids edited so far by edit_while_listing, in order
        self._issues: list[_Issue] = []
        self._views: dict[tuple[str, str, str | None], tuple[list[int], list[str]]] = {}
        self._server: _FakeServer | None = None
        self._thread: threading.Thread | None = None
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window
        self._rl_remaining = rate_limit
        self._rl_reset = 0
        base = self.now.timestamp()
        rand = self._rng.random
        for _ in range(issues):
            created = base - rand() * 30 * 86400
            self._append_issue(created, created + rand() * (base - created))
        self._notifications = self._make_notifications(notifications, base)
        self._events = self._make_events(events, base)

    # -- data --------------------------------------------------------------------------------

    @staticmethod
    def issue_id(number: int) -> int:
        return 1_000_000 + number

    def _append_issue(self, created: float, updated: float) -> _Issue:
        # One 64-bit draw per issue, sliced into choices: generating 100,000 issues must take
        # well under a second, and random.choices/sample per field is several times slower.
        bits = self._rng.getrandbits(64)
        number = len(self._issues) + 1
        nw, nl, nu = len(_WORDS), len(_LABELS), len(_USERS)
        w = [(bits >> (5 * k)) % nw for k in range(6)]
        label_count = (bits >> 30) % 3
        labels = [_LABELS[(bits >> (33 + 3 * k)) % nl] for k in range(label_count)]
        issue = _Issue(
            id=self.issue_id(number),
            number=number,
            title=f"{_WORDS[w[0]].capitalize()} {_WORDS[w[1]]} #{number}",
            state="closed" if (bits >> 42) % 10 < 3 else "open",
            user=_USERS[(bits >> 46) % nu],
            labels=list(dict.fromkeys(labels)),
            created=float(int(created)),
            updated=float(int(updated)),
            body=f"Steps to reproduce issue {number}: {_WORDS[w[2]]} {_WORDS[w[3]]} {_WORDS[w[4]]} {_WORDS[w[5]]}.",
        )
        self._serialize(issue)
        self._issues.append(issue)
        return issue

    def _serialize(self, issue: _Issue) -> None:
        """Refresh the timestamp strings; the JSON is rendered lazily on first serve."""
        issue.created_at = _iso(issue.created)
        issue.updated_at = _iso(issue.updated)
        issue.json = ""

    def _render(self, issue: _Issue) -> str:
        """Render the issue's JSON with an f-string (generated text needs no escaping)."""
        labels = ",".join(f'{{"name":"{name}"}}' for name in issue.labels)
        closed = f'"{issue.updated_at}"' if issue.state == "closed" else "null"
        return (
            f'{{"id":{issue.id},"number":{issue.number},"title":"{issue.title}",'
            f'"state":"{issue.state}","user":{{"login":"{issue.user}"}},"labels":[{labels}],'
            f'"created_at":"{issue.created_at}","updated_at":"{issue.updated_at}",'
            f'"closed_at":{closed},"html_url":"{self._html_prefix}{issue.number}","body":"{issue.body}"}}'
        )

    def _issue_dict(self, issue: _Issue) -> dict[str, Any]:
        return {
            "id": issue.id,
            "number": issue.number,
            "title": issue.title,
            "state": issue.state,
            "user": {"login": issue.user},
            "labels": [{"name": name} for name in issue.labels],
            "created_at": issue.created_at,
            "updated_at": issue.updated_at,
            "closed_at": issue.updated_at if issue.state == "closed" else None,
            "html_url": f"https://github.com/{self.owner}/{self.repo}/issues/{issue.number}",
            "body": issue.body,
        }

    def _issue_json(self, issue: _Issue) -> str:
        if issue.id in self.malformed_issue_ids:
            broken = self._issue_dict(issue)
            broken.pop("title")
            broken["updated_at"] = None
            return json.dumps(broken, separators=(",", ":"))
        if not issue.json:
            issue.json = self._render(issue)
        return issue.json

    def _make_notifications(self, count: int, base: float) -> list[dict[str, Any]]:
        rng = random.Random(self._rng.random())
        out = []
        for i in range(count):
            updated = int(base - rng.uniform(0, 7 * 86400))
            number = rng.randint(1, max(1, len(self._issues)))
            out.append(
                {
                    "id": str(9000 + i),
                    "unread": rng.random() < 0.6,
                    "reason": rng.choice(_REASONS),
                    "updated_at": _iso(updated),
                    "subject": {
                        "title": f"Notification {i} about issue {number}",
                        "type": "Issue",
                        "url": f"https://api.github.com/repos/{self.owner}/{self.repo}/issues/{number}",
                    },
                    "repository": {"full_name": f"{self.owner}/{self.repo}"},
                }
            )
        out.sort(key=lambda n: (n["updated_at"], n["id"]), reverse=True)
        return out

    def _make_events(self, count: int, base: float) -> list[dict[str, Any]]:
        rng = random.Random(self._rng.random())
        out = []
        for i in range(count):
            kind = rng.choice(_EVENT_TYPES)
            out.append(
                {
                    "id": str(50_000_000 + i),
                    "type": kind,
                    "actor": {"login": self.login},
                    "created_at": _iso(int(base - rng.uniform(0, 30 * 86400))),
                    "repo": {"name": f"{self.owner}/{self.repo}"},
                    "payload": {"action": "opened"} if kind != "PushEvent" else {"size": rng.randint(1, 5)},
                    "public": True,
                }
            )
        out.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
        return out

    @property
    def events(self) -> list[dict[str, Any]]:
        """The user's events as served, newest arrival first (copies)."""
        with self._lock:
            return [dict(e) for e in self._events]

    @property
    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(n) for n in self._notifications]

    def add_events(self, created_at: Iterable[str]) -> list[str]:
        """Events that arrive now, with the given ``created_at`` (possibly long past: GitHub lists
        events 30 s to hours after they happen). They go to the top of the listing, as GitHub
        orders by arrival; returns their ids."""
        with self._lock:
            next_id = max((int(e["id"]) for e in self._events), default=50_000_000) + 1
            added: list[dict[str, Any]] = [{"id": str(next_id + k), "type": "IssuesEvent", "actor": {"login": self.login},
                      "created_at": at, "repo": {"name": f"{self.owner}/{self.repo}"},
                      "payload": {"action": "opened"}, "public": True} for k, at in enumerate(created_at)]
            self._events[:0] = added[::-1]
            return [e["id"] for e in added]

    def add_notifications(self, updated_at: Iterable[str]) -> list[str]:
        """Notification threads updated at the given times (the listing stays newest first); ids."""
        with self._lock:
            next_id = max((int(n["id"]) for n in self._notifications), default=9000) + 1
            added: list[dict[str, Any]] = [{"id": str(next_id + k), "unread": True, "reason": "mention", "updated_at": at,
                      "subject": {"title": f"Late notification {next_id + k}", "type": "Issue",
                                  "url": f"https://api.github.com/repos/{self.owner}/{self.repo}/issues/1"},
                      "repository": {"full_name": f"{self.owner}/{self.repo}"}} for k, at in enumerate(updated_at)]
            self._notifications = sorted(self._notifications + added, key=lambda n: (n["updated_at"], n["id"]),
                                         reverse=True)
            return [n["id"] for n in added]

    def update_notification(self, thread_id: str, updated_at: str) -> None:
        """A new ``updated_at`` for one notification thread (a new comment, say)."""
        with self._lock:
            thread = next(n for n in self._notifications if n["id"] == thread_id)
            thread["updated_at"] = updated_at
            self._notifications.sort(key=lambda n: (n["updated_at"], n["id"]), reverse=True)

    def issue(self, number: int) -> dict[str, Any]:
        """The issue as currently served (a fresh dict)."""
        with self._lock:
            issue: dict[str, Any] = json.loads(self._issue_json(self._issues[number - 1]))
            return issue

    @property
    def issue_count(self) -> int:
        return len(self._issues)

    def _next_time(self) -> float:
        newest = max((i.updated for i in self._issues), default=0.0)
        return max(float(int(self.clock().timestamp())), newest + 1.0)

    def bump(self, ids_or_count: int | Iterable[int]) -> list[int]:
        """Set ``updated_at`` of some issues to a time after every other issue; returns ids.

        An ``int`` bumps that many issues chosen deterministically; an iterable names issue ids.
        All bumped issues share one new timestamp, strictly newer than anything served so far.
        """
        with self._lock:
            if isinstance(ids_or_count, int):
                count = min(ids_or_count, len(self._issues))
                chosen = [self._issues[n] for n in sorted(self._rng.sample(range(len(self._issues)), count))]
            else:
                ids = list(ids_or_count)
                unknown = [i for i in ids if not 1 <= i - 1_000_000 <= len(self._issues)]
                if unknown:
                    raise KeyError(f"unknown issue ids: {unknown}")
                chosen = [self._issues[i - 1_000_001] for i in ids]
            when = self._next_time()
            for issue in chosen:
                issue.updated = when
                self._serialize(issue)
            self._views.clear()
            return [i.id for i in chosen]

    def add_issues(self, n: int) -> list[int]:
        """Append ``n`` new open issues, created and updated after every existing issue."""
        with self._lock:
            when = self._next_time()
            added = [self._append_issue(when, when) for _ in range(n)]
            for issue in added:
                issue.state = "open"
                self._serialize(issue)
            self._views.clear()
            return [i.id for i in added]

    def edit_while_listing(self, ids_or_count: int | Iterable[int], *, after_pages: int = 1) -> None:
        """Edit (``bump``) issues once ``after_pages`` more pages of an issues listing have been
        served: the edited issues move to the end of a ``sort=updated`` listing, and each issue
        after them moves up one place, so the first issue of the next page lands on a page the
        client has already read. ``listing_edits_done`` records the ids edited, in order."""
        if after_pages < 1:
            raise ValueError("after_pages must be >= 1")
        with self._lock:
            self._listing_edits.append([after_pages, ids_or_count])

    def _after_listing_page(self) -> None:
        """Apply the edits that are due (called under the lock after each issues page is served)."""
        due = []
        for edit in self._listing_edits:
            edit[0] -= 1
            if edit[0] <= 0:
                due.append(edit)
        for edit in due:
            self._listing_edits.remove(edit)
            self.listing_edits_done.append(self.bump(edit[1]))

    def _view(self, state: str, sort: str, since: str | None) -> tuple[list[int], int]:
        """Indexes of issues in (state, sort) order, ascending by (sort key, number), and the
        offset of the first one at or after ``since``: the caller pages from there, so a request
        never copies the whole view (that made each page O(issues))."""
        key = (state, sort, since if sort == "created" else None)
        with self._lock:
            view = self._views.get(key)
            if view is None:
                issues = self._issues
                idx = [i for i, it in enumerate(issues) if state == "all" or it.state == state]
                attr = "created" if sort == "created" else "updated"
                idx.sort(key=lambda i: (getattr(issues[i], attr), issues[i].number))
                if since is not None and sort == "created":
                    idx = [i for i in idx if issues[i].updated_at >= since]
                keys = [issues[i].created_at if sort == "created" else issues[i].updated_at for i in idx]
                if len(self._views) > 64:
                    self._views.clear()
                view = (idx, keys)
                self._views[key] = view
        if since is not None and sort == "updated":
            return view[0], bisect.bisect_left(view[1], since)
        return view[0], 0

    # -- faults & counters ---------------------------------------------------------------------

    def fail_next(
        self, n: int, status: int = 429, retry_after: str | None = "1", path_prefix: str | None = None
    ) -> None:
        """Answer the next ``n`` authenticated requests (optionally only under ``path_prefix``)
        with ``status``: 429 (+ ``Retry-After``), 403 (secondary rate limit) or a 5xx."""
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, path_prefix) for _ in range(n))

    def slow(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 turns it off)."""
        self.delay = max(0.0, seconds)

    def set_rate_limit(self, limit: int, window: float = 3600.0) -> None:
        """Primary rate limit: ``limit`` requests per ``window`` s, then 403 until the reset."""
        with self._lock:
            self.rate_limit = limit
            self.rate_limit_window = window
            self._rl_remaining = limit
            self._rl_reset = 0

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    @property
    def request_times(self) -> list[float]:
        """When each request arrived (epoch seconds), in arrival order."""
        with self._lock:
            return list(self._request_times)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._request_times.clear()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        host, port = _host_port(self._server.server_address)
        return f"http://{host}:{port}"

    def start(self) -> FakeGitHub:
        """Bind and serve in a daemon thread; returns once the socket is listening."""
        if self._server is not None:
            return self
        server = _FakeServer((self.host, self.port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-github", daemon=True
        )
        self._thread.start()
        return self

    # -- GitHub App installations (POST /app/installations/{id}/access_tokens) ---------------------

    def enable_app(self, *, app_id: int = 4242, installation_id: int = 777, token_ttl: float = 3600.0) -> str:
        """Act as GitHub for one installed app; returns the app's private key (PEM) for its credentials.

        The exchange endpoint verifies the JWT as GitHub does (RS256 with the app's public key,
        ``iss`` = app id, not expired, at most 10 minutes long) and issues installation tokens valid
        for ``token_ttl`` seconds that the rest of the API accepts like ``token``."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_id = app_id
        self.installation_id = installation_id
        self.installation_token_ttl = token_ttl
        self._app_public_key = key.public_key()
        self.installation_tokens: dict[str, float] = {}  # token -> expiry (epoch)
        self.app_jwt_rejections = 0
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def expire_installation_tokens(self) -> None:
        with self._lock:
            self.installation_tokens.clear()

    def _installation_token_ok(self, token: str) -> bool:
        tokens: dict[str, float] | None = getattr(self, "installation_tokens", None)
        return tokens is not None and tokens.get(token, 0.0) > time.time()

    def _app_access_token(self, target: str, scheme: str, credential: str) -> tuple[int, dict[str, str], bytes]:
        import jwt

        segments = urlsplit(target).path.strip("/").split("/")
        if getattr(self, "_app_public_key", None) is None or len(segments) != 4 or segments[3] != "access_tokens":
            return 404, {}, _json_bytes({"message": "Not Found"})
        try:
            claims = jwt.decode(
                credential, self._app_public_key, algorithms=["RS256"], issuer=str(self.app_id),
                options={"require": ["iat", "exp", "iss"]}, leeway=60,
            )
            if int(claims["exp"]) - int(claims["iat"]) > 600:
                raise jwt.InvalidTokenError("expiration too far in the future")
        except jwt.PyJWTError:
            self.app_jwt_rejections += 1
            return 401, {}, _json_bytes({"message": "A JSON web token could not be decoded"})
        if scheme.lower() != "bearer":
            return 401, {}, _json_bytes({"message": "A JSON web token must be sent as a Bearer token"})
        if segments[2] != str(self.installation_id):
            return 404, {}, _json_bytes({"message": "Not Found"})
        expires = time.time() + self.installation_token_ttl
        token = f"ghs_{len(self.installation_tokens) + 1}_{int(expires * 1000)}"
        self.installation_tokens[token] = expires
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, {}, _json_bytes({"token": token, "expires_at": stamp, "permissions": {"issues": "read"}})

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling (called from handler threads) -----------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self._rl_remaining)),
            "X-RateLimit-Reset": str(self._rl_reset),
            "X-RateLimit-Used": str(self.rate_limit - max(0, self._rl_remaining)),
            "X-RateLimit-Resource": "core",
        }

    def handle(self, method: str, target: str, headers: Any, base: str) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body)."""
        if target.startswith("/_fake/requests"):  # control endpoint for out-of-process benchmarks
            with self._lock:
                stats = {"count": len(self._requests), "times": list(self._request_times)}
            return 200, {}, _json_bytes(stats)
        with self._lock:
            self._requests.append((method, target))
            now = time.time()
            self._request_times.append(now)
            if now >= self._rl_reset:
                self._rl_remaining = self.rate_limit
                self._rl_reset = int(math.ceil(now + self.rate_limit_window))
            auth = headers.get("Authorization") or ""
            scheme, _sep, credential = auth.partition(" ")
            if method == "POST" and target.startswith("/app/installations/"):
                return self._app_access_token(target, scheme, credential.strip())
            if scheme.lower() not in ("bearer", "token") or (
                credential.strip() != self.token and not self._installation_token_ok(credential.strip())
            ):
                return 401, self._rate_headers(), _json_bytes(
                    {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
                )
            parts = urlsplit(target)
            fault = None
            for i, candidate in enumerate(self._faults):
                if candidate.path_prefix is None or parts.path.startswith(candidate.path_prefix):
                    fault = self._faults.pop(i)
                    break
            if fault is None and self._rl_remaining <= 0:
                extra = self._rate_headers()
                return 403, extra, _json_bytes(
                    {"message": f"API rate limit exceeded for user {self.login}."}
                )
            if fault is None:
                self._rl_remaining -= 1
            rate = self._rate_headers()
        if fault is not None:
            out = dict(rate)
            if fault.retry_after is not None:
                out["Retry-After"] = fault.retry_after
            if fault.status == 403:
                error = {"message": _SECONDARY}
            elif fault.status == 429:
                error = {"message": "Too Many Requests"}
            else:
                error = {"message": "Server Error"}
            return fault.status, out, _json_bytes(error)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        status, extra, body = self._route(parts.path.rstrip("/") or "/", query, base)
        rate.update(extra)
        return status, rate, body

    def _route(self, path: str, query: dict[str, str], base: str) -> tuple[int, dict[str, str], bytes]:
        segments = path.strip("/").split("/")
        repo_prefix = ["repos", self.owner, self.repo, "issues"]
        if segments[:4] == repo_prefix and len(segments) == 4:
            return self._list_issues(path, query, base)
        if segments[:4] == repo_prefix and len(segments) == 5 and segments[4].isdigit():
            number = int(segments[4])
            with self._lock:
                if 1 <= number <= len(self._issues):
                    return 200, {}, self._issue_json(self._issues[number - 1]).encode()
            return 404, {}, _json_bytes({"message": "Not Found"})
        if segments == ["user"]:
            return 200, {}, _json_bytes({"login": self.login, "id": 1, "type": "User"})
        if segments == ["notifications"]:
            items = self._notifications
            since = query.get("since")
            if since is not None:
                norm = _parse_since(since)
                if norm is None:
                    return 422, {}, _json_bytes({"message": "Invalid since"})
                items = [n for n in items if n["updated_at"] >= norm]
            return self._paged_list(path, query, base, items)
        if len(segments) == 3 and segments[0] == "users" and segments[2] == "events":
            return self._paged_list(path, query, base, self._events)
        return 404, {}, _json_bytes({"message": "Not Found"})

    @staticmethod
    def _paging(query: dict[str, str], default_per_page: int = 30) -> tuple[int, int]:
        try:
            per_page = min(100, max(1, int(query.get("per_page", default_per_page))))
        except ValueError:
            per_page = default_per_page
        try:
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            page = 1
        return page, per_page

    @staticmethod
    def _link(base: str, path: str, query: dict[str, str], page: int, per_page: int, total: int) -> dict[str, str]:
        if total == 0:
            return {}
        last = max(1, math.ceil(total / per_page))

        def at(p: int) -> str:
            q = dict(query)
            q["per_page"] = str(per_page)
            q["page"] = str(p)
            return f"<{base}{path}?{urlencode(q)}>"

        links = []
        if page < last:
            links += [f'{at(page + 1)}; rel="next"', f'{at(last)}; rel="last"']
        if page > 1:
            links += [f'{at(1)}; rel="first"', f'{at(min(page - 1, last))}; rel="prev"']
        return {"Link": ", ".join(links)} if links else {}

    def _paged_list(
        self, path: str, query: dict[str, str], base: str, items: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], bytes]:
        page, per_page = self._paging(query)
        chunk = items[(page - 1) * per_page : page * per_page]
        return 200, self._link(base, path, query, page, per_page, len(items)), _json_bytes(chunk)

    def _list_issues(self, path: str, query: dict[str, str], base: str) -> tuple[int, dict[str, str], bytes]:
        state = query.get("state", "open")
        sort = query.get("sort", "created")
        direction = query.get("direction", "desc")
        if state not in ("open", "closed", "all") or sort not in ("created", "updated") or direction not in (
            "asc",
            "desc",
        ):
            return 422, {}, _json_bytes({"message": "Validation Failed"})
        since = None
        if "since" in query:
            since = _parse_since(query["since"])
            if since is None:
                return 422, {}, _json_bytes({"message": "Invalid since"})
        page, per_page = self._paging(query)
        with self._lock:
            idx, first = self._view(state, sort, since)
            total = len(idx) - first
            start, stop = (page - 1) * per_page, page * per_page
            if direction == "asc":
                chosen = idx[first + start:first + stop]
            else:
                lo, hi = max(0, total - stop), max(0, total - start)
                chosen = idx[first + lo:first + hi][::-1]
            body = "[" + ",".join(self._issue_json(self._issues[i]) for i in chosen) + "]"
            if self._listing_edits:
                self._after_listing_page()
        return 200, self._link(base, path, query, page, per_page, total), body.encode()


def _host_port(address: object) -> tuple[str, int]:
    """``(host, port)`` of a TCP server's ``server_address`` (typeshed allows bytes hosts and other families)."""
    if not isinstance(address, tuple) or len(address) < 2:
        raise RuntimeError(f"not a TCP address: {address!r}")
    host, port = address[0], address[1]
    return (host.decode() if isinstance(host, bytes) else str(host)), int(port)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class _FakeServer(ThreadingHTTPServer):
    """The HTTP server of one ``FakeGitHub`` (its handlers reach it as ``self.server.fake``)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeGitHub) -> None:
        super().__init__(address, _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGitHub/1.0"
    disable_nagle_algorithm = True
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _serve(self) -> None:
        server = self.server
        if not isinstance(server, _FakeServer):  # pragma: no cover - the handler is only served by _FakeServer
            raise TypeError(f"{type(self).__name__} is served by _FakeServer, not {type(server).__name__}")
        fake = server.fake
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if fake.delay:
            time.sleep(fake.delay)
        host = self.headers.get("Host") or "{}:{}".format(*_host_port(self.server.server_address))
        status, headers, body = fake.handle(self.command, self.path, self.headers, f"http://{host}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        # Headers and body in one write: two small writes per response interact badly with
        # delayed ACKs and cost a GIL hand-off each when client and server share a process.
        # ``_headers_buffer`` is CPython's own (BaseHTTPRequestHandler), absent from typeshed.
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if self.command != "HEAD":
            self._headers_buffer.append(body)  # type: ignore[attr-defined]
        self.flush_headers()

    do_GET = _serve
    do_HEAD = _serve
    do_POST = _serve
    do_PATCH = _serve
    do_PUT = _serve
    do_DELETE = _serve


def main(argv: list[str] | None = None) -> None:
    """Serve a fake GitHub until interrupted (``python -m providers.github.fake_api``)."""
    parser = argparse.ArgumentParser(prog="python -m providers.github.fake_api", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--issues", type=int, default=1000)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--owner", default="acme")
    parser.add_argument("--repo", default="widgets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-limit", type=int, default=5000, help="requests per hour per token (GitHub's 5,000)")
    args = parser.parse_args(argv)
    fake = FakeGitHub(
        issues=args.issues, token=args.token, host=args.host, port=args.port,
        owner=args.owner, repo=args.repo, seed=args.seed, rate_limit=args.rate_limit,
    ).start()
    print(f"fake GitHub serving {args.issues} issues of {args.owner}/{args.repo} at {fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
