"""OAuth2 access tokens with refresh (issue 14 point 1, first part: the pure decisions and the
token-endpoint exchange).

What is here: a typed record for stored OAuth2 credentials, a pure function deciding whether a
token must be refreshed (before expiry with a margin, or once after a 401), the parsing of a token
endpoint's answer (rotating refresh tokens are kept; a missing one keeps the old one), and the
refresh-token grant itself over ``httpx`` (RFC 6749 section 6). A refused refresh raises
:class:`RefreshRefused` whose message tells the operator what to do.

``OAuth2Strategy`` plugs this into the HTTP layer (``integrations_dagster.http.token_auth``), which
holds the database lock around a refresh and stores the new tokens encrypted.

Libraries: the authorization-code grant of account setup (the authorization URL with its PKCE
challenge, the code exchange) is Authlib's (``authorization_request``, ``exchange_code``; see there).
The refresh grant here is one form POST and its answer (RFC 6749 6), kept as such: what is hard
about refreshing is what no client library does, refreshing at most once across processes (a
database lock, re-reading the stored tokens under it) and storing the rotated tokens encrypted
before anyone uses them. Authlib's httpx ``OAuth2Client`` refreshes inside one client object and
reports the new token through a callback, so two workers would still refresh at once with the same
refresh token; wrapped in the lock it would only do this POST.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from integrations_dagster.errors import CredentialsError

DEFAULT_MARGIN = timedelta(seconds=60)
#: What a refused refresh tells the operator to do.
RECONNECT = ("connect the account again (`integrations connect PROVIDER --authorize-url ...`, then "
             "`--redirected-to ...`; README: Account setup)")


class RefreshRefused(CredentialsError):
    """The token endpoint refused the refresh token: the account must be connected again.

    ``auth_failure``: a run that fails with it counts as an authentication failure for health."""

    auth_failure = True


@dataclass(frozen=True)
class OAuth2Token:
    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None  # aware UTC; None = unknown / does not expire
    token_type: str = "Bearer"

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "token_type": self.token_type,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OAuth2Token:
        if not isinstance(data.get("access_token"), str) or not data["access_token"]:
            raise CredentialsError("OAuth2 credentials: field 'access_token' is missing or empty")
        raw = data.get("expires_at")
        expires = None
        if raw:
            try:
                expires = datetime.fromisoformat(str(raw))
            except ValueError as exc:
                raise CredentialsError(
                    f"OAuth2 credentials: field 'expires_at' is not an ISO timestamp: {raw!r}"
                ) from exc
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
        return cls(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token") or None,
            expires_at=expires,
            token_type=str(data.get("token_type") or "Bearer"),
        )


class RefreshDecision(enum.Enum):
    USE = "use"
    REFRESH = "refresh"
    CANNOT_REFRESH = "cannot_refresh"


def refresh_decision(
    token: OAuth2Token,
    now: datetime,
    *,
    margin: timedelta = DEFAULT_MARGIN,
    got_401: bool = False,
) -> RefreshDecision:
    """Pure: refresh when the token expires within ``margin`` of ``now`` or the API said 401."""
    due = got_401 or (token.expires_at is not None and token.expires_at - margin <= now)
    if not due:
        return RefreshDecision.USE
    return RefreshDecision.REFRESH if token.refresh_token else RefreshDecision.CANNOT_REFRESH


def parse_token_response(body: Any, now: datetime, previous: OAuth2Token) -> OAuth2Token:
    """Pure: the new token from a token endpoint's JSON answer. A rotated refresh token replaces
    the old one; an answer without one keeps the old one (RFC 6749 6: the server MAY issue one)."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise CredentialsError("token endpoint answer has no 'access_token'")
    expires_in = body.get("expires_in")
    expires_at = None
    if expires_in is not None:
        try:
            expires_at = now + timedelta(seconds=float(expires_in))
        except (TypeError, ValueError) as exc:
            raise CredentialsError(f"token endpoint answer: 'expires_in' is not a number: {expires_in!r}") from exc
    return replace(
        previous,
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token") or previous.refresh_token,
        expires_at=expires_at,
        token_type=str(body.get("token_type") or previous.token_type),
    )


def refresh(
    token: OAuth2Token,
    *,
    token_url: str,
    client_id: str,
    client_secret: str | None = None,
    timeout: float = 30.0,
    now: datetime | None = None,
    client: httpx.Client | None = None,
) -> OAuth2Token:
    """Exchange the refresh token for a new access token (refresh_token grant)."""
    if not token.refresh_token:
        raise RefreshRefused("no refresh token stored: " + RECONNECT)
    data = {"grant_type": "refresh_token", "refresh_token": token.refresh_token, "client_id": client_id}
    if client_secret:
        data["client_secret"] = client_secret
    own = client is None
    http = client or httpx.Client(timeout=timeout)
    try:
        try:
            resp = http.post(token_url, data=data, headers={"Accept": "application/json"}, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise CredentialsError(f"token endpoint {token_url} did not answer within {timeout}s") from exc
        if resp.status_code in (400, 401):
            try:
                err = resp.json().get("error", "")
            except ValueError:
                err = ""
            raise RefreshRefused(
                f"token endpoint refused the refresh token ({resp.status_code} {err or 'no error code'}): "
                "the account's authorization was revoked or the refresh token was already used; "
                + RECONNECT
            )
        if resp.status_code >= 300:
            raise CredentialsError(f"token endpoint {token_url} answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise CredentialsError(f"token endpoint {token_url} answered non-JSON") from exc
        return parse_token_response(body, now or datetime.now(UTC), token)
    finally:
        if own:
            http.close()


#: Credential keys of an OAuth2 integration (``credentials`` column, encrypted).
OAUTH2_KEYS = ("access_token", "refresh_token", "expires_at", "token_url", "client_id", "client_secret")


class OAuth2Strategy:
    """Stored OAuth2 credentials for ``StoredTokenAuth``: bearer ``access_token``, refreshed with
    the refresh-token grant at ``token_url`` (``client_id``/``client_secret``) ``margin`` before
    ``expires_at`` or after a 401."""

    name = "oauth2"

    def __init__(
        self, *, margin: timedelta = DEFAULT_MARGIN, timeout: float = 30.0, token_url: str | None = None
    ) -> None:
        self.margin = margin
        self.timeout = timeout
        self.token_url = token_url  # used when the credentials carry none (declared by the provider)

    def header(self, credentials: dict[str, Any]) -> str | None:
        token = credentials.get("access_token")
        if not token:
            return None
        kind = str(credentials.get("token_type") or "Bearer")
        return f"{'Bearer' if kind.lower() == 'bearer' else kind} {token}"

    def needs_refresh(self, credentials: dict[str, Any], now: datetime, got_401: bool) -> bool:
        token = OAuth2Token.from_dict(credentials)
        return refresh_decision(token, now, margin=self.margin, got_401=got_401) is not RefreshDecision.USE

    def refresh(self, credentials: dict[str, Any], now: datetime) -> dict[str, Any]:
        token = OAuth2Token.from_dict(credentials)
        url = credentials.get("token_url") or self.token_url
        client_id = credentials.get("client_id")
        if not token.refresh_token or not url or not client_id:
            missing = [k for k in ("refresh_token", "token_url", "client_id")
                       if not (credentials.get(k) or (k == "token_url" and self.token_url))]
            raise RefreshRefused(
                f"the access token expired or was refused and cannot be refreshed (credentials lack "
                f"{', '.join(missing)}): " + RECONNECT
            )
        new = refresh(
            token, token_url=str(url), client_id=str(client_id),
            client_secret=credentials.get("client_secret"), timeout=self.timeout, now=now,
        )
        return new.to_dict()


def credentials_from_callback(
    body: Any,
    now: datetime,
    *,
    token_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """Pure: the credentials to store from an OAuth callback's token response (account setup).

    A response with a refresh token (or an expiry) becomes refreshable OAuth2 credentials
    (``access_token``, ``refresh_token``, ``expires_at``, ``token_url``, ``client_id``,
    ``client_secret``); a long-lived token alone (GitHub OAuth apps) becomes ``{"token": ...}``."""
    if not isinstance(body, dict):
        raise CredentialsError("OAuth callback: expected a JSON object (the token endpoint's answer)")
    if body.get("error"):
        raise CredentialsError(
            f"OAuth callback carries an error: {body.get('error')} {body.get('error_description') or ''}".strip()
        )
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise CredentialsError("OAuth callback: field 'access_token' is missing or empty")
    if not body.get("refresh_token") and body.get("expires_in") is None:
        return {"token": body["access_token"]}
    token = parse_token_response(body, now, OAuth2Token(access_token=body["access_token"]))
    out = token.to_dict()
    if token.refresh_token and not (token_url and client_id):
        raise CredentialsError("OAuth callback has a refresh token: give the token URL and client id to refresh it")
    out.update({k: v for k, v in (("token_url", token_url), ("client_id", client_id),
                                  ("client_secret", client_secret)) if v})
    return out


# --- account setup: the authorization-code grant (RFC 6749 4.1, PKCE RFC 7636) ---------------------
# The mechanics are Authlib's (``authlib.integrations.httpx_client.OAuth2Client``: the authorization
# URL with its PKCE S256 challenge, the code-for-token POST with the client's authentication and the
# error answers of RFC 6749 5.2): a well-kept, widely used implementation on the httpx we already use.
# What is ours: the state, sealed with INTEGRATIONS_SECRET_KEY (it carries the PKCE verifier and
# what the new integration needs, so the callback needs no server-side session and a forged or
# stale state is refused), and turning the answer into an integration (``operations.connect``).

#: How long an authorization may take from the URL to the callback.
STATE_MAX_AGE = 600


def _authlib_httpx() -> Any:
    """Authlib's httpx ``OAuth2Client`` and ``OAuthError``. Authlib 1.9 prefers the ``httpx2`` package
    and warns when it falls back to ``httpx``, which is the client this project uses and pins: the
    warning is about Authlib's future, not this use, and is not shown."""
    import warnings

    import authlib.deprecate  # noqa: F401 - it installs an "always" filter of its own: ours goes after it

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The httpx module is deprecated")
        from authlib.integrations.base_client import OAuthError
        from authlib.integrations.httpx_client import OAuth2Client
    return OAuth2Client, OAuthError


@dataclass(frozen=True)
class OAuth2Declaration:
    """A provider's OAuth2 (seed 001's ``auth.OAuth2``: authorization and token URLs, scopes)."""

    authorization_url: str
    token_url: str
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    #: Send a PKCE S256 challenge (RFC 7636); the verifier travels inside the sealed state.
    pkce: bool = True
    #: How the client authenticates at the token endpoint: ``client_secret_post`` (GitHub),
    #: ``client_secret_basic`` or ``none`` (a public client: PKCE only).
    token_auth_method: str = "client_secret_post"

    def with_urls(self, *, authorization_url: str | None = None, token_url: str | None = None) -> OAuth2Declaration:
        """The same declaration at other hosts (GitHub Enterprise Server, a fake in tests)."""
        return replace(self, authorization_url=authorization_url or self.authorization_url,
                       token_url=token_url or self.token_url)


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the account owner, and the state the callback must bring back."""

    url: str
    state: str
    verifier: str | None = field(default=None, repr=False)


def authorization_request(
    decl: OAuth2Declaration,
    *,
    client_id: str,
    state: str,
    verifier: str | None,
    redirect_uri: str | None = None,
    scopes: tuple[str, ...] | None = None,
) -> AuthorizationRequest:
    """The authorization URL (``response_type=code``, client id, scopes, state, PKCE challenge)."""
    OAuth2Client, _ = _authlib_httpx()
    wanted = decl.scopes if scopes is None else scopes
    with OAuth2Client(client_id=client_id, redirect_uri=redirect_uri,
                      scope=decl.scope_separator.join(wanted) if wanted else None,
                      code_challenge_method="S256" if decl.pkce else None) as client:
        url, _ = client.create_authorization_url(decl.authorization_url, state=state,
                                                 code_verifier=verifier if decl.pkce else None)
    return AuthorizationRequest(url=str(url), state=state, verifier=verifier)


def new_verifier() -> str:
    """A PKCE code verifier (48 random characters of the unreserved set, RFC 7636 4.1)."""
    from authlib.common.security import generate_token

    return str(generate_token(48))


def exchange_code(
    decl: OAuth2Declaration,
    *,
    code: str,
    client_id: str,
    client_secret: str | None,
    redirect_uri: str | None,
    verifier: str | None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """POST the authorization code (and PKCE verifier) to the token URL; the token endpoint's answer.

    Raises ``CredentialsError`` naming the endpoint's error (``invalid_grant``: the code was used,
    expired or the verifier does not match) or the transport problem."""
    OAuth2Client, OAuthError = _authlib_httpx()
    method = decl.token_auth_method if client_secret else "none"
    extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
    with OAuth2Client(client_id=client_id, client_secret=client_secret, token_endpoint_auth_method=method,
                      redirect_uri=redirect_uri, timeout=timeout, **extra) as client:
        try:
            token = client.fetch_token(decl.token_url, grant_type="authorization_code", code=code,
                                       **({"code_verifier": verifier} if verifier else {}))
        except OAuthError as exc:
            raise CredentialsError(
                f"the token endpoint {decl.token_url} refused the authorization code ({exc.error}"
                f"{': ' + exc.description if exc.description else ''}): codes work once and for a few minutes; "
                "start the authorization again"
            ) from None
        except httpx.TimeoutException:
            raise CredentialsError(f"the token endpoint {decl.token_url} did not answer within {timeout}s") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise CredentialsError(f"the token endpoint {decl.token_url} failed: {type(exc).__name__}: {exc}") from None
    return dict(token)
