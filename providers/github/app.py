"""GitHub App installation tokens: app id + private key -> JWT -> installation token.

An organisation installs a GitHub App; the app authenticates as that installation with a token
GitHub issues for one hour (``POST /app/installations/{installation_id}/access_tokens``, called
with a JWT the app signs with its private key: RS256, ``iss`` = app id, at most 10 minutes long).

Credentials of an app-installation integration (stored encrypted like any other):
``app_id``, ``private_key`` (PEM), ``installation_id``; the framework adds
``installation_token`` and ``installation_token_expires_at`` once it has exchanged one. The token
is cached there until ``margin`` (5 min) before it expires and shared by every run and worker of
the integration: ``StoredTokenAuth`` exchanges under the integration's database lock and re-reads
the stored token first, so concurrent runs do one exchange. The JWT is made with PyJWT (RS256 via
``cryptography``), the standard implementation; its claims are GitHub's documented ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from integrations_dagster import CredentialsError, Integration, Provider
from integrations_dagster.http.token_auth import StoredTokenAuth
from integrations_dagster.security.oauth2 import RefreshRefused
from providers.github.common import GITHUB_HEADERS

APP_KEYS = ("app_id", "private_key", "installation_id")
DEFAULT_MARGIN = timedelta(minutes=5)
JWT_BACKDATE = 60  # seconds: GitHub recommends an iat in the past against clock drift
JWT_LIFETIME = 540  # seconds after iat... (GitHub refuses more than 600 in total)


def app_jwt(app_id: str | int, private_key: str, now: datetime) -> str:
    """The app's JWT for ``now`` (RS256, iat = now - 60 s, exp = now + 9 min, iss = app id)."""
    import jwt

    issued = int(now.timestamp()) - JWT_BACKDATE
    try:
        return jwt.encode(
            {"iat": issued, "exp": issued + JWT_BACKDATE + JWT_LIFETIME, "iss": str(app_id)},
            private_key, algorithm="RS256",
        )
    except (ValueError, TypeError, jwt.PyJWTError) as exc:  # not a PEM RSA private key
        raise CredentialsError(
            f"GitHub App credentials: field 'private_key' is not a PEM RSA private key ({type(exc).__name__})"
        ) from None


def _parse_time(raw: Any) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_app_installation(credentials: dict[str, Any]) -> bool:
    return bool(credentials.get("app_id") or credentials.get("installation_id"))


def check_app_credentials(credentials: dict[str, Any]) -> None:
    missing = [k for k in APP_KEYS if not credentials.get(k)]
    if missing:
        raise CredentialsError(f"GitHub App credentials: missing field(s) {', '.join(missing)}")


class GitHubAppStrategy:
    """``TokenStrategy`` for ``StoredTokenAuth``: an installation token from the app's JWT."""

    name = "github_app"

    def __init__(self, base_url: str, *, margin: timedelta = DEFAULT_MARGIN, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.margin = margin
        self.timeout = timeout

    def header(self, credentials: dict[str, Any]) -> str | None:
        token = credentials.get("installation_token")
        return f"Bearer {token}" if token else None

    def needs_refresh(self, credentials: dict[str, Any], now: datetime, got_401: bool) -> bool:
        if got_401 or not credentials.get("installation_token"):
            return True
        expires = _parse_time(credentials.get("installation_token_expires_at"))
        return expires is None or expires - self.margin <= now

    def refresh(self, credentials: dict[str, Any], now: datetime) -> dict[str, Any]:
        check_app_credentials(credentials)
        installation = credentials["installation_id"]
        url = f"{self.base_url}/app/installations/{installation}/access_tokens"
        token = app_jwt(credentials["app_id"], str(credentials["private_key"]), now)
        try:
            resp = httpx.post(url, headers={**GITHUB_HEADERS, "Authorization": f"Bearer {token}"}, timeout=self.timeout)
        except httpx.TimeoutException:
            raise CredentialsError(f"GitHub did not answer the installation token request within {self.timeout}s") from None
        except httpx.TransportError as exc:
            raise CredentialsError(f"GitHub installation token request failed: {type(exc).__name__}") from None
        if resp.status_code in (401, 403, 404):
            raise RefreshRefused(
                f"GitHub refused an installation token for app {credentials['app_id']}, installation "
                f"{installation} (HTTP {resp.status_code}): check the app id and private key, and that the "
                "app is still installed on the account; then update the credentials or connect it again "
                "(`integrations connect github --app-id ... --installation-id ...`)"
            )
        if resp.status_code >= 300:
            raise CredentialsError(f"GitHub installation token request answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise CredentialsError("GitHub installation token answer is not JSON") from None
        if not isinstance(body, dict) or not body.get("token"):
            raise CredentialsError("GitHub installation token answer has no 'token'")
        expires = _parse_time(body.get("expires_at")) or now + timedelta(hours=1)
        return {"installation_token": body["token"], "installation_token_expires_at": expires.isoformat()}


def github_auth(provider: Any, integration: Integration) -> Any:
    """What the GitHub providers authenticate with: ``credentials['token']`` (a personal or OAuth
    token), or an app installation (``app_id`` + ``private_key`` + ``installation_id``)."""
    creds = integration.credentials
    if creds.get("token"):
        return Provider.http_auth(provider, integration)
    if is_app_installation(creds):
        check_app_credentials(creds)
        base = integration.metadata.get("base_url") or provider.base_url
        return StoredTokenAuth(GitHubAppStrategy(str(base)), creds, integration_id=integration.id)
    return Provider.http_auth(provider, integration)


GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"


def setup_integration(provider: Any, callback: dict[str, Any], metadata: dict[str, Any], *,
                      needs: tuple[str, ...]) -> Any:
    """The GitHub providers' account setup (CORE's SETUP event).

    ``callback``: the OAuth token response (``access_token``; with ``refresh_token`` and
    ``expires_in`` for expiring user tokens, then ``metadata['client_id']`` and
    ``callback['client_secret']`` or ``metadata['token_url']`` are kept to refresh it), or an app
    installation (``installation_id`` + ``app_id`` + ``private_key``; exchanged once at once, so wrong ones store
    nothing). Looks up the account with ``GET /user`` (an installation: the account is
    ``metadata['owner']``) and names the integration ``login: owner/repo``.
    """
    from integrations_dagster import IntegrationsError
    from integrations_dagster.http import ApiClient, ApiError
    from integrations_dagster.operations.connect import IntegrationSetup
    from integrations_dagster.security.oauth2 import credentials_from_callback

    missing = [k for k in needs if not metadata.get(k)]
    if missing:
        raise IntegrationsError(f"connect {provider.key}: metadata is missing {', '.join(missing)}")
    base = str(metadata.get("base_url") or provider.base_url)
    meta = dict(metadata)
    client_secret = callback.pop("client_secret", None)
    creds: dict[str, Any]
    if is_app_installation(callback):
        creds = {k: callback[k] for k in ("app_id", "private_key", "installation_id") if k in callback}
        check_app_credentials(creds)
        from datetime import datetime

        # exchange once now: wrong app credentials are refused before anything is stored
        creds.update(GitHubAppStrategy(base).refresh(creds, datetime.now(UTC)))
        login = str(meta.get("owner") or f"installation {creds['installation_id']}")
    else:
        from datetime import datetime

        creds = credentials_from_callback(
            callback, datetime.now(UTC), token_url=str(meta.pop("token_url", GITHUB_TOKEN_URL)),
            client_id=meta.pop("client_id", None), client_secret=client_secret,
        )
        token = creds.get("token") or creds["access_token"]
        try:
            with ApiClient(base_url=base, headers={**GITHUB_HEADERS, "Authorization": f"Bearer {token}"},
                           max_attempts=2, secrets=[token]) as api:
                user = api.get_json("/user")
        except ApiError as exc:
            raise IntegrationsError(f"connect {provider.key}: GitHub refused the new token ({exc}); "
                                    "nothing was stored, run the OAuth flow again") from None
        login = str(user.get("login") or "")
        if not login:
            raise IntegrationsError(f"connect {provider.key}: GET /user answered without a login")
        meta["login"] = login
    if provider.key == "github_activity":
        meta.setdefault("username", login)
    repo = f"{meta['owner']}/{meta['repo']}" if meta.get("owner") and meta.get("repo") else None
    name = f"{login}: {repo}" if repo else f"{login} ({provider.key})"
    return IntegrationSetup(name=name, metadata=meta, credentials=creds)
