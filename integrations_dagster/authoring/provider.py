"""The ``Provider`` base class a provider author subclasses."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from integrations_dagster.authoring.rate_limit import RateLimit

if TYPE_CHECKING:
    from integrations_dagster.authoring.events import SyncItemEvent
    from integrations_dagster.authoring.integration import Integration
    from integrations_dagster.authoring.session import SyncSession
    from integrations_dagster.authoring.tables import ProviderTables
    from integrations_dagster.engine.push import Mutation, PushOutcome
    from integrations_dagster.security.oauth2 import OAuth2Declaration


def reduce_by_max(checkpoints: list[Any]) -> Any:
    """The largest checkpoint (right for ISO-8601 timestamps and ordered ids); None for no checkpoints.

    Timestamps with a time zone compare by instant (``...00Z`` < ``...00.5Z``); a number and a string,
    NaN, dicts and other values that cannot be ordered raise ``UnorderableCheckpoint`` (a ``TypeError``).
    See ``_cursor.checkpoint_key``.
    """
    from integrations_dagster.engine.cursor import reduce_by_max as _reduce

    return _reduce(checkpoints)


class Provider:
    """Enumerates the items changed since ``session.cursor`` and dispatches each one.

    Subclasses set ``key`` and implement ``sync`` (and optionally ``sync_incremental``, which the
    framework then calls instead). The framework owns retries, tracking, cursors, rate limits and
    logging; a provider only enumerates.

    ``reduce_checkpoints`` must be associative: the framework reduces a run's checkpoints in pages
    and reduces the result with the previous cursor to keep the cursor monotonic. A provider that
    overrides it is treated as having a *structured* cursor (no low-water-mark advance) unless it
    sets ``ordered_checkpoints = True``.
    """

    key: ClassVar[str]
    default_sync_interval: ClassVar[int | None] = None
    default_rate_limit: ClassVar[RateLimit | None] = None
    #: Base URL for ``session.http``; ``metadata["base_url"]`` overrides it per integration.
    base_url: ClassVar[str | None] = None
    #: Headers every request of ``session.http`` carries (e.g. an API version).
    http_headers: ClassVar[dict[str, str]] = {}
    #: None: inferred (True when ``reduce_checkpoints`` is the default maximum).
    ordered_checkpoints: ClassVar[bool | None] = None
    #: Items per mapped step for this provider; None: ``SyncSettings.chunk_size``. Providers whose
    #: listeners are cheap per item (batch upserts) want bigger chunks: fewer Dagster steps.
    chunk_size: ClassVar[int | None] = None
    #: pydantic models of the integration's metadata and credentials (None: not checked). ``add``
    #: validates against them and names each missing, wrong or unknown field; declare
    #: ``model_config = ConfigDict(extra="forbid")`` to catch misspelt keys.
    metadata_model: ClassVar[type[BaseModel] | None] = None
    credentials_model: ClassVar[type[BaseModel] | None] = None
    #: The provider's own destination tables, created and upgraded by the engine before it runs the
    #: provider (``authoring.tables``); None: the provider writes only to tables it manages itself.
    owned_tables: ClassVar[ProviderTables | None] = None

    #: How an account authorizes this provider (OAuth2 authorization and token URLs, scopes): used by
    #: account setup (``integrations connect KEY --authorize-url``) with ``setup_integration``.
    oauth2: ClassVar[OAuth2Declaration | None] = None

    #: Mutations per push request for this provider; None: ``SyncSettings.push_batch_size``.
    push_batch_size: ClassVar[int | None] = None

    def sync(self, integration: Integration, session: SyncSession) -> None:
        raise NotImplementedError(f"provider {type(self).__name__} must implement sync()")

    def reduce_checkpoints(self, checkpoints: list[Any]) -> Any:
        return reduce_by_max(checkpoints)

    # --- typed configuration ------------------------------------------------------------------
    def validate_config(self, metadata: Any, credentials: Any, *, name: str = "") -> None:
        """Raise ``InvalidIntegrationConfig`` when metadata or credentials do not match the models."""
        from integrations_dagster.authoring.config import validate_integration_config

        validate_integration_config(self.key, name, self.metadata_model, self.credentials_model_for(credentials),
                                    metadata, credentials)

    def credentials_model_for(self, credentials: Any) -> type[BaseModel] | None:
        """The model ``credentials`` must match (override when a provider takes several kinds, e.g. a
        token or an app installation); default ``credentials_model``."""
        return self.credentials_model

    def metadata_of(self, integration: Integration) -> Any:
        """The integration's metadata as ``metadata_model`` (the plain dict when there is none)."""
        if self.metadata_model is None:
            return integration.metadata
        from integrations_dagster.authoring.config import validate_integration_config

        validate_integration_config(self.key, integration.name, self.metadata_model, None, integration.metadata, None)
        return self.metadata_model.model_validate(integration.metadata)

    # --- push direction (issue 13): implement both to get Tether's push -> pull cycle ----------
    def push(self, integration: Integration, batch: list[Mutation], session: SyncSession) -> list[PushOutcome]:
        """Send ``batch`` (pending mutations, id order) to the server; one outcome per mutation:
        ``Applied``, ``Rejected(reason, details)`` or ``Conflict(server_state)``. Raise on a
        transport error (the batch stays pending). ``session.http`` is the integration's client.

        The issue's two-argument form ``push(self, integration, batch)`` works too: the engine reads
        the override's signature and passes the session only when it takes a third argument (or a
        keyword ``session``); during either, ``current_sync().http`` is the same client."""
        raise NotImplementedError(f"provider {type(self).__name__} does not push")

    def conflict_event(self, integration: Integration, mutation: Mutation, server_state: Any) -> SyncItemEvent:
        """The event that applies a conflict's server state locally: dispatched as a tracked item of
        the run (listeners, retries, failed items, operator verbs: as for a pulled snapshot)."""
        raise NotImplementedError(f"provider {type(self).__name__} pushes but has no conflict_event()")

    def conflict_external_id(self, integration: Integration, mutation: Mutation) -> str:
        """External id of a conflict's item; match the pulled snapshots' ids so a later version of the
        same record supersedes it. Default ``entity:key``."""
        return f"{mutation.entity}:{mutation.key}"

    def required_listeners(self) -> list[Any]:
        """Listeners (``ListenerSpec``) without which this provider's items would succeed unstored; the
        engine refuses definitions that lack one. Default: none (a coded provider's listeners are the
        app's choice)."""
        return []

    def supports_push(self) -> bool:
        return type(self).push is not Provider.push

    # --- hooks with sensible defaults -------------------------------------------------------
    def enumerate(self, integration: Integration, session: SyncSession) -> None:
        """Call ``sync_incremental`` when the provider defines it, else ``sync``."""
        incremental = getattr(self, "sync_incremental", None)
        if callable(incremental):
            incremental(integration, session)
        else:
            self.sync(integration, session)

    def has_ordered_checkpoints(self) -> bool:
        if self.ordered_checkpoints is not None:
            return bool(self.ordered_checkpoints)
        return type(self).reduce_checkpoints is Provider.reduce_checkpoints

    def http_auth(self, integration: Integration) -> Any:
        """httpx auth for ``session.http``. Default: bearer ``credentials['token']`` when present;
        else OAuth2 when ``credentials['access_token']`` is (refreshed before ``expires_at`` and
        once on a 401 with ``refresh_token`` at ``token_url``, shared by every run: see
        ``integrations_dagster.http.token_auth``); else none."""
        creds = integration.credentials
        token = creds.get("token")
        if token:
            return _BearerAuth(str(token))
        if creds.get("access_token"):
            from integrations_dagster.http.token_auth import StoredTokenAuth
            from integrations_dagster.security.oauth2 import OAuth2Strategy

            return StoredTokenAuth(OAuth2Strategy(), creds, integration_id=integration.id)
        return None


class _BearerAuth:
    """httpx.Auth without importing httpx at module import time."""

    def __new__(cls, token: str) -> Any:  # pragma: no cover - trivial
        import httpx

        class Bearer(httpx.Auth):
            def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
                request.headers["Authorization"] = f"Bearer {token}"
                yield request

        return Bearer()
