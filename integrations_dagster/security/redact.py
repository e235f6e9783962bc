"""Scrubbing of credentials out of URLs, headers and free text.

Why: every URL, header and error message produced by the HTTP layer ends up in a request log
row, a Dagster event or an exception that an operator pastes into a ticket. Tokens travel in
``Authorization`` headers *and* in query strings (``?access_token=``), so both are scrubbed at
the point where a string leaves the HTTP layer, not later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

REDACTED = "REDACTED"
MASK = "***"

#: Query parameter names (lower-cased) whose values are credentials.
SENSITIVE_QUERY_PARAMS: frozenset[str] = frozenset(
    {
        "access_token",
        "token",
        "api_key",
        "apikey",
        "key",
        "client_secret",
        "secret",
        "password",
        "sig",
        "signature",
        "auth",
        "code",
        "refresh_token",
        "id_token",
    }
)

#: Header names (lower-cased) whose values are credentials.
SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_SENSITIVE_HEADER_PARTS: tuple[str, ...] = ("token", "secret", "api-key", "apikey", "password")

_FALLBACK_QUERY_RE = re.compile(
    r"(?i)([?&](?:" + "|".join(sorted(SENSITIVE_QUERY_PARAMS, key=len, reverse=True)) + r")=)[^&#\s]*"
)


def _is_sensitive_param(raw_name: str) -> bool:
    return unquote_plus(raw_name).strip().lower() in SENSITIVE_QUERY_PARAMS


def redact_url(url: str) -> str:
    """Return ``url`` with userinfo removed and credential-like query values replaced.

    Non-sensitive parameters keep their exact original encoding, so a redacted URL is still
    useful for debugging (you can see ``page=3``). Unparseable input falls back to a regex pass
    rather than raising: redaction must never be the thing that hides the real error.
    """
    url = str(url)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pieces = []
            for piece in query.split("&"):
                name, sep, _value = piece.partition("=")
                if _is_sensitive_param(name):
                    pieces.append(f"{name}={REDACTED}")
                else:
                    pieces.append(piece)
            query = "&".join(pieces)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return _FALLBACK_QUERY_RE.sub(lambda m: m.group(1) + REDACTED, url)


def sensitive_query_values(url: str) -> list[str]:
    """Values of credential-like query params in ``url``, so they can also be scrubbed from text."""
    try:
        query = urlsplit(str(url)).query
    except ValueError:
        return []
    values = []
    for piece in query.split("&"):
        name, _sep, value = piece.partition("=")
        if value and _is_sensitive_param(name):
            values.append(unquote_plus(value))
            values.append(value)
    return values


def is_sensitive_header(name: str) -> bool:
    """True if a header with this name carries a credential."""
    lower = name.strip().lower()
    return lower in SENSITIVE_HEADERS or any(part in lower for part in _SENSITIVE_HEADER_PARTS)


def redact_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | Any) -> dict[str, str]:
    """Return a plain dict copy of ``headers`` with credential headers replaced by ``REDACTED``.

    Accepts a mapping, an ``httpx.Headers`` or a list of pairs. Repeated headers are joined with
    ``", "`` (as HTTP allows) so nothing silently disappears from a log.
    """
    if hasattr(headers, "multi_items"):
        pairs: Iterable[tuple[str, Any]] = headers.multi_items()
    elif isinstance(headers, Mapping):
        pairs = headers.items()
    else:
        pairs = headers
    out: dict[str, str] = {}
    for name, value in pairs:
        name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        shown = REDACTED if is_sensitive_header(name) else value
        out[name] = f"{out[name]}, {shown}" if name in out else shown
    return out


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each known secret (len >= 4) in ``text`` with ``***``.

    Longer secrets are replaced first so a secret that contains another is fully masked.
    URL-encoded forms are masked too, because secrets often reach messages via a URL.
    Secrets shorter than 4 characters are ignored: masking "a" would destroy the message.
    """
    text = str(text)
    candidates: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        candidates.add(secret)
        candidates.add(quote(secret, safe=""))
        candidates.add(quote_plus(secret, safe=""))
    for secret in sorted(candidates, key=len, reverse=True):
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, MASK)
    return text
