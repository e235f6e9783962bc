"""A fake OAuth2 API for tests and demos: a token endpoint and a protected resource, real HTTP.

Token endpoint ``POST /token`` (refresh-token grant, form-encoded): every refresh token works once
and is replaced by a new one (rotation); reusing one is refused with ``400 invalid_grant``, as a
strict provider would, and counted in ``reused``. ``delay`` makes it slow, ``refuse = True`` refuses
every grant (a revoked authorization). Access tokens live ``access_ttl`` seconds.

Authorization-code grant (account setup): ``GET /authorize?response_type=code&client_id=...&
redirect_uri=...&state=...&code_challenge=...&code_challenge_method=S256`` stands for the account
owner approving: it redirects (302) to ``redirect_uri?code=...&state=...`` (``deny = True``:
``?error=access_denied&state=...``). ``POST /token`` with ``grant_type=authorization_code`` accepts a
code once, for the same client id and redirect URI, with the PKCE verifier whose S256 hash is the
challenge and, when ``client_secret`` is set, that secret (form field or HTTP basic); else
``400 invalid_grant`` / ``401 invalid_client``. ``code_access_token`` makes the code grant issue that
access token (the one a fake API accepts); ``code_refresh = False`` answers as GitHub OAuth apps do
(a long-lived token, no refresh token, no expiry).

Resource ``GET /items``: 200 with ``{"items": [...]}`` for a live access token, else 401.
``expire_access_tokens()`` makes every issued access token invalid at once (the API's clock says
the token expired before ours did), so the next request gets a 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOAuthAPI:
    def __init__(self, *, items: int = 5, access_ttl: float = 3600.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.items = items
        self.access_ttl = access_ttl
        self.delay = 0.0
        self.refuse = False
        self.refreshes = 0  # successful refresh grants
        self.refused = 0
        self.reused = 0  # refresh tokens presented a second time
        self.unauthorized = 0  # 401s served by the resource
        self.seen_refresh_tokens: list[str] = []
        # authorization-code grant
        self.client_secret: str | None = None
        self.deny = False
        self.code_access_token: str | None = None
        self.code_refresh = True
        self.authorize_requests: list[dict[str, str]] = []
        self.code_grants: list[dict[str, str]] = []
        self._codes: dict[str, dict[str, str]] = {}  # code -> the authorize request's parameters
        self._valid_refresh: set[str] = set()
        self._used_refresh: set[str] = set()
        self._access: dict[str, float] = {}  # access token -> expiry (epoch)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                if self.path != "/token":
                    self._reply(404, {"error": "not_found"})
                    return
                if outer.delay:
                    time.sleep(outer.delay)
                if form.get("grant_type") == "authorization_code":
                    self._reply(*outer._code_grant(form, self.headers.get("Authorization") or ""))
                    return
                self._reply(*outer._grant(form))

            def do_GET(self) -> None:
                if urllib.parse.urlsplit(self.path).path == "/authorize":
                    location = outer._authorize(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)))
                    if location is None:
                        self._reply(400, {"error": "invalid_request"})
                        return
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._reply(*outer._resource(self.path, self.headers.get("Authorization") or ""))

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self.token_url = f"{self.url}/token"
        self.authorize_url = f"{self.url}/authorize"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-oauth")
        self._thread.start()

    # -- setup helpers -----------------------------------------------------------------------------

    def issue(self, *, expires_in: float | None = None) -> dict[str, Any]:
        """A fresh access + refresh token pair, as an authorization-code exchange would give."""
        with self._lock:
            return self._new_pair(self.access_ttl if expires_in is None else expires_in)

    def credentials(self, *, expires_in: float | None = None, client_id: str = "client-1",
                    client_secret: str = "client-secret-xyz") -> dict[str, Any]:
        """Credentials for an integration of this API (expiry as ISO UTC)."""
        from datetime import datetime, timedelta

        pair = self.issue(expires_in=expires_in)
        expires_at = datetime.now(UTC) + timedelta(seconds=pair["expires_in"])
        return {
            "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
            "expires_at": expires_at.isoformat(), "token_url": self.token_url,
            "client_id": client_id, "client_secret": client_secret,
        }

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOAuthAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handlers ----------------------------------------------------------------------------------

    _counter = 0

    def _new_pair(self, ttl: float) -> dict[str, Any]:
        FakeOAuthAPI._counter += 1
        n = FakeOAuthAPI._counter
        access, refresh = f"at-{n}-{time.monotonic_ns()}", f"rt-{n}-{time.monotonic_ns()}"
        self._access[access] = time.time() + ttl
        self._valid_refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": ttl, "token_type": "bearer"}

    def _grant(self, form: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            rt = form.get("refresh_token", "")
            self.seen_refresh_tokens.append(rt)
            if form.get("grant_type") != "refresh_token" or not form.get("client_id"):
                return 400, {"error": "invalid_request"}
            if rt in self._used_refresh:
                self.reused += 1
            if self.refuse or rt not in self._valid_refresh:
                self.refused += 1
                return 400, {"error": "invalid_grant", "error_description": "refresh token revoked or used"}
            self._valid_refresh.discard(rt)
            self._used_refresh.add(rt)
            self.refreshes += 1
            return 200, self._new_pair(self.access_ttl)

    def _authorize(self, q: dict[str, str]) -> str | None:
        with self._lock:
            self.authorize_requests.append(dict(q))
            redirect = q.get("redirect_uri")
            if q.get("response_type") != "code" or not q.get("client_id") or not redirect:
                return None
            sep = "&" if "?" in redirect else "?"
            if self.deny:
                return redirect + sep + urllib.parse.urlencode({"error": "access_denied", "state": q.get("state", "")})
            code = secrets.token_urlsafe(16)
            self._codes[code] = dict(q)
            return redirect + sep + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})

    def _code_grant(self, form: dict[str, str], auth: str) -> tuple[int, Any]:
        with self._lock:
            self.code_grants.append(dict(form))
            client_id, secret = form.get("client_id"), form.get("client_secret")
            if auth.lower().startswith("basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
            if self.client_secret is not None and secret != self.client_secret:
                return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
            asked = self._codes.pop(form.get("code", ""), None)  # a code works once
            if asked is None or asked.get("client_id") != client_id or asked.get("redirect_uri") != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "unknown, used or mismatched code"}
            challenge = asked.get("code_challenge")
            if challenge:
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if asked.get("code_challenge_method") != "S256" or digest != challenge:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            if not self.code_refresh:
                token = self.code_access_token or f"at-code-{secrets.token_hex(4)}"
                self._access[token] = time.time() + 10 * 365 * 86400
                return 200, {"access_token": token, "token_type": "bearer", "scope": asked.get("scope", "")}
            pair = self._new_pair(self.access_ttl)
            if self.code_access_token:
                self._access[self.code_access_token] = self._access.pop(pair["access_token"])
                pair["access_token"] = self.code_access_token
            return 200, {**pair, "scope": asked.get("scope", "")}

    def _resource(self, path: str, auth: str) -> tuple[int, Any]:
        scheme, _sep, token = auth.partition(" ")
        with self._lock:
            live = scheme.lower() == "bearer" and self._access.get(token.strip(), 0) > time.time()
            if not live:
                self.unauthorized += 1
                return 401, {"message": "invalid or expired access token"}
        if urllib.parse.urlsplit(path).path != "/items":
            return 404, {"message": "not found"}
        return 200, {"items": [{"id": i, "updated_at": f"2026-01-01T00:00:{i:02d}Z"} for i in range(self.items)]}
