"""Account setup (seed 001's SETUP event): a provider turns an OAuth callback into a new integration.

``connect(store, engine=..., provider_key=..., callback=...)`` asks the provider's
``setup_integration(callback, metadata)`` for an ``IntegrationSetup`` (it looks up the account's
identity with the new credentials, names the integration, says which credentials to keep), then
creates the integration like ``integrations add`` (tenant, cron or interval; credentials encrypted).
Nothing is stored when the provider refuses (bad token, identity lookup failed).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from integrations_dagster.errors import IntegrationsError


class IntegrationSetup(BaseModel):
    """What a provider's ``setup_integration`` returns."""

    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict, repr=False)


def connect(
    store: Any,
    *,
    engine: Any,
    provider_key: str,
    callback: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
    interval_minutes: int | None = None,
    cron: str | None = None,
    tenant: str | None = None,
) -> Any:
    """Create an integration of ``provider_key`` from an OAuth callback response; returns it."""
    from integrations_dagster.operations.actions import add_integration

    provider = engine.provider(provider_key)
    setup = getattr(provider, "setup_integration", None)
    if not callable(setup):
        raise IntegrationsError(
            f"provider {provider_key!r} does not support account setup (no setup_integration); "
            "use `integrations add` with its credentials instead"
        )
    if interval_minutes is not None and cron is not None:
        raise IntegrationsError("give either an interval or a cron expression, not both")
    result = setup(dict(callback), dict(metadata or {}))
    if not isinstance(result, IntegrationSetup):
        result = IntegrationSetup.model_validate(result)
    return add_integration(
        store, engine=engine, provider_key=provider_key, name=name or result.name, metadata=result.metadata,
        credentials=result.credentials, interval_minutes=interval_minutes, cron=cron, tenant=tenant,
    )


# --- the OAuth authorization step (authorization-code grant with PKCE) ---------------------------
class AuthorizationStart(BaseModel):
    """What ``start_authorization`` returns: send the account owner to ``url``; the provider redirects
    back to the redirect URI with ``code`` and ``state`` (give both to ``complete_authorization``)."""

    provider_key: str
    url: str
    state: str
    expires_in: int


_PURPOSE = "OAuth account setup"


def _declaration(provider: Any, provider_key: str, authorization_url: str | None, token_url: str | None) -> Any:
    decl = getattr(provider, "oauth2", None)
    if decl is None:
        raise IntegrationsError(
            f"provider {provider_key!r} declares no OAuth2 (authorization and token URLs): connect it with "
            "--callback (a token response you already have) or `integrations add`"
        )
    return decl.with_urls(authorization_url=authorization_url, token_url=token_url)


def start_authorization(
    engine: Any,
    *,
    provider_key: str,
    client_id: str,
    redirect_uri: str | None = None,
    scopes: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
    interval_minutes: int | None = None,
    cron: str | None = None,
    tenant: str | None = None,
    authorization_url: str | None = None,
    token_url: str | None = None,
    cipher: Any = None,
) -> AuthorizationStart:
    """Step 1 of account setup: the authorization URL of ``provider_key``'s OAuth2 declaration
    (client id, scopes, redirect URI, a state, a PKCE S256 challenge). The state is sealed with
    INTEGRATIONS_SECRET_KEY and carries the PKCE verifier and what the new integration gets (metadata,
    name, schedule, tenant), so the callback needs nothing else; it expires after 10 minutes."""
    from integrations_dagster.security.oauth2 import STATE_MAX_AGE, authorization_request, new_verifier
    from integrations_dagster.security.secrets import CredentialCipher

    provider = engine.provider(provider_key)
    decl = _declaration(provider, provider_key, authorization_url, token_url)
    if not callable(getattr(provider, "setup_integration", None)):
        raise IntegrationsError(f"provider {provider_key!r} does not support account setup (no setup_integration)")
    if not client_id:
        raise IntegrationsError("OAuth account setup needs the OAuth app's client id (--client-id)")
    if interval_minutes is not None and cron is not None:
        raise IntegrationsError("give either an interval or a cron expression, not both")
    if cron is not None:
        from integrations_dagster.engine.cron import validate_cron

        validate_cron(cron)
    verifier = new_verifier() if decl.pkce else None
    sealed = (cipher or CredentialCipher()).seal({
        "p": provider_key, "c": client_id, "r": redirect_uri, "v": verifier, "t": decl.token_url,
        "m": dict(metadata or {}), "n": name, "i": interval_minutes, "x": cron, "tenant": tenant,
    }, purpose=_PURPOSE)
    req = authorization_request(decl, client_id=client_id, state=sealed, verifier=verifier, redirect_uri=redirect_uri,
                                scopes=tuple(scopes) if scopes is not None else None)
    return AuthorizationStart(provider_key=provider_key, url=req.url, state=req.state, expires_in=STATE_MAX_AGE)


def complete_authorization(
    store: Any,
    *,
    engine: Any,
    state: str,
    code: str | None = None,
    provider_key: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
    client_secret: str | None = None,
    tenant: str | None = None,
    cipher: Any = None,
    timeout: float = 30.0,
    transport: Any = None,
) -> Any:
    """Step 2 of account setup: the callback's ``code`` and ``state`` become tokens (through the token
    URL, with the PKCE verifier) and then a new integration (``connect``: identity, name, encrypted
    credentials, schedule, tenant). Nothing is stored when the state is forged or stale, the owner
    declined, or the token endpoint refuses the code."""
    from integrations_dagster.security.oauth2 import STATE_MAX_AGE, exchange_code
    from integrations_dagster.security.secrets import CredentialCipher

    pending = (cipher or CredentialCipher()).unseal(state, max_age=STATE_MAX_AGE, purpose=_PURPOSE)
    if provider_key is not None and provider_key != pending["p"]:
        raise IntegrationsError(f"this authorization was started for provider {pending['p']!r}, not {provider_key!r}")
    provider_key = str(pending["p"])
    if tenant is not None and pending.get("tenant") not in (None, tenant):
        raise IntegrationsError(f"this authorization was started for tenant {pending.get('tenant')!r}, not {tenant!r}")
    if error:
        raise IntegrationsError(f"the account owner did not authorize {provider_key} ({error}"
                                f"{': ' + error_description if error_description else ''}); nothing was stored")
    if not code:
        raise IntegrationsError("the callback has no authorization code (?code=...)")
    provider = engine.provider(provider_key)
    decl = _declaration(provider, provider_key, None, str(pending["t"]))
    answer = exchange_code(decl, code=code, client_id=str(pending["c"]), client_secret=client_secret,
                           redirect_uri=pending.get("r"), verifier=pending.get("v"), timeout=timeout, transport=transport)
    if client_secret:
        answer["client_secret"] = client_secret  # kept only when the answer is refreshable
    metadata = {**pending.get("m", {}), "client_id": pending["c"], "token_url": decl.token_url}
    return connect(store, engine=engine, provider_key=provider_key, callback=answer, metadata=metadata,
                   name=pending.get("n"), interval_minutes=pending.get("i"), cron=pending.get("x"),
                   tenant=pending.get("tenant") if pending.get("tenant") is not None else tenant)
