"""OAuth2 refresh against a real local token endpoint (rotation, expiry, refusal, slow answers)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integrations_dagster.errors import CredentialsError
from integrations_dagster.security.oauth2 import (
    OAuth2Token,
    RefreshDecision,
    RefreshRefused,
    parse_token_response,
    refresh,
    refresh_decision,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


class FakeTokenEndpoint:
    """Rotating refresh tokens: each refresh token works once; reuse is refused (invalid_grant)."""

    def __init__(self) -> None:
        self.valid = {"r0"}
        self.calls = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                time.sleep(outer.delay)
                with outer.lock:
                    outer.calls += 1
                    rt = form.get("refresh_token")
                    ok = form.get("grant_type") == "refresh_token" and rt in outer.valid
                    if ok:
                        outer.valid.discard(rt)
                        new_rt = f"r{outer.calls}"
                        outer.valid.add(new_rt)
                        body = {"access_token": f"a{outer.calls}", "refresh_token": new_rt,
                                "expires_in": 3600, "token_type": "bearer"}
                        code = 200
                    else:
                        body, code = {"error": "invalid_grant"}, 400
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    ep = FakeTokenEndpoint()
    yield ep
    ep.close()


def test_decision_refreshes_before_expiry_and_on_401() -> None:
    fresh = OAuth2Token("a", "r", NOW + timedelta(hours=1))
    assert refresh_decision(fresh, NOW) is RefreshDecision.USE
    assert refresh_decision(fresh, NOW + timedelta(minutes=59, seconds=30)) is RefreshDecision.REFRESH
    assert refresh_decision(fresh, NOW, got_401=True) is RefreshDecision.REFRESH
    assert refresh_decision(OAuth2Token("a"), NOW, got_401=True) is RefreshDecision.CANNOT_REFRESH
    assert refresh_decision(OAuth2Token("a"), NOW) is RefreshDecision.USE


def test_rotation_keeps_the_new_refresh_token_and_old_one_is_refused(endpoint) -> None:
    tok = OAuth2Token("a", "r0", NOW)
    new = refresh(tok, token_url=endpoint.url, client_id="cid", now=NOW)
    assert new.access_token == "a1" and new.refresh_token == "r1"
    assert new.expires_at == NOW + timedelta(hours=1)
    assert refresh(new, token_url=endpoint.url, client_id="cid", now=NOW).refresh_token == "r2"
    with pytest.raises(RefreshRefused, match="connect the account again"):
        refresh(tok, token_url=endpoint.url, client_id="cid")


def test_answer_without_refresh_token_keeps_the_old_one() -> None:
    prev = OAuth2Token("a", "keep", None)
    new = parse_token_response({"access_token": "b", "expires_in": 10}, NOW, prev)
    assert new.refresh_token == "keep" and new.expires_at == NOW + timedelta(seconds=10)
    with pytest.raises(CredentialsError, match="access_token"):
        parse_token_response({"error": "x"}, NOW, prev)


def test_slow_endpoint_gives_a_clear_timeout_and_keeps_the_token(endpoint) -> None:
    endpoint.delay = 0.5
    tok = OAuth2Token("a", "r0", NOW)
    with pytest.raises(CredentialsError, match="did not answer"):
        refresh(tok, token_url=endpoint.url, client_id="cid", timeout=0.1)
    assert tok.refresh_token == "r0"


def test_round_trip_and_bad_stored_fields() -> None:
    tok = OAuth2Token("a", "r", NOW)
    assert OAuth2Token.from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    with pytest.raises(CredentialsError, match="access_token"):
        OAuth2Token.from_dict({"refresh_token": "r"})
    with pytest.raises(CredentialsError, match="expires_at"):
        OAuth2Token.from_dict({"access_token": "a", "expires_at": "soon"})
