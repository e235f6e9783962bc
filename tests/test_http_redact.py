"""Redaction of URLs, headers and free text."""

from __future__ import annotations

import httpx
import pytest

from integrations_dagster.http import redact_headers, redact_text, redact_url


@pytest.mark.parametrize(
    "name",
    ["access_token", "token", "api_key", "apikey", "key", "client_secret", "secret", "password",
     "sig", "signature", "auth", "code", "ACCESS_TOKEN", "Api_Key"],
)
def test_redact_url_masks_each_sensitive_param(name: str) -> None:
    out = redact_url(f"https://api.example.com/x?page=2&{name}=s3cr3tvalue&per_page=100")
    assert "s3cr3tvalue" not in out
    assert f"{name}=REDACTED" in out
    assert out.startswith("https://api.example.com/x?page=2&")
    assert out.endswith("&per_page=100")


def test_redact_url_removes_userinfo_and_keeps_the_rest_verbatim() -> None:
    out = redact_url("https://alice:hunter22@example.com:8443/a%20b?q=x%2Fy&token=abc#frag")
    assert out == "https://example.com:8443/a%20b?q=x%2Fy&token=REDACTED#frag"
    assert redact_url("https://example.com/plain") == "https://example.com/plain"
    assert redact_url("/relative?apikey=zzzz") == "/relative?apikey=REDACTED"


def test_redact_url_does_not_touch_lookalike_names() -> None:
    out = redact_url("https://e.com/?keyword=hello&monkey=1&tokens_used=3")
    assert out == "https://e.com/?keyword=hello&monkey=1&tokens_used=3"


def test_redact_headers() -> None:
    headers = httpx.Headers(
        {
            "Authorization": "Bearer ghp_abc",
            "Proxy-Authorization": "Basic xyz",
            "Cookie": "session=1",
            "Set-Cookie": "session=2",
            "X-Api-Key": "k-123",
            "X-GitHub-Token": "t-1",
            "X-Client-Secret": "s-1",
            "Accept": "application/json",
        }
    )
    out = redact_headers(headers)
    for name in ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                 "x-github-token", "x-client-secret"):
        assert out[name] == "REDACTED", name
    assert out["accept"] == "application/json"
    assert redact_headers({"AUTHORIZATION": "x", "User-Agent": "u"}) == {"AUTHORIZATION": "REDACTED", "User-Agent": "u"}
    assert redact_headers([("Accept", "a"), ("Accept", "b")]) == {"Accept": "a, b"}


def test_redact_text_masks_every_occurrence_longest_first_and_encoded() -> None:
    text = "token ghp_secret123 again ghp_secret123 and url ?t=a%2Fb%3Dc and ghp_secret123456"
    out = redact_text(text, ["ghp_secret123", "ghp_secret123456", "a/b=c", "ab", "", None])
    assert "ghp_secret" not in out
    assert "a%2Fb%3Dc" not in out
    assert out.count("***") == 4
    assert "ab" not in redact_text("xx", ["ab"]) and redact_text("ab cab", ["ab"]) == "ab cab"  # short ignored
