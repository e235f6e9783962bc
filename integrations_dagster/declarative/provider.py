"""``RestProvider``: a pull provider defined entirely by a ``RestConfig`` (see docs/REST_PROVIDERS.md).

Enumeration: per resource, GET ``path`` (metadata placeholders filled in) with ``params`` and the
incremental parameter (the cursor minus ``overlap_seconds``, else the first-run value), page with
the configured paginator, and dispatch every item as a ``RestItemSynced`` with its checkpoint field
and external id. An item without them is recorded as an invalid item (it holds the cursor and can
be skipped), never dropped. One resource: the cursor is the largest checkpoint (as in
``providers/github/issues.py``); several: a dict ``{resource: checkpoint}``.

Processing: the provider's own staged listener (``provider.listener``; pass it to
``build_definitions(listeners=[...])``: the engine refuses definitions without it) moves each batch
into the resource's destination table with one ``INSERT ... SELECT`` from the staged items on both
databases: the payloads never come back through Python.

Destination tables are created and changed only by ``integrations rest migrate`` (``declarative.migrate``):
a run whose tables are not at the configuration's schema fails before it reads anything.

Auth kinds the framework does not know (``github_app``) are passed in explicitly:
``RestProvider(config, auth={"github_app": factory})``; there is no process-wide registry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from integrations_dagster.authoring.events import SyncItemEvent
from integrations_dagster.authoring.listeners import ListenerSpec
from integrations_dagster.authoring.provider import Provider, _BearerAuth, reduce_by_max
from integrations_dagster.authoring.rate_limit import RateLimit
from integrations_dagster.authoring.staged import StagedBatch
from integrations_dagster.declarative import config as cfg
from integrations_dagster.errors import CredentialsError, IntegrationsError
from integrations_dagster.http import paginators as pg

#: A factory for an auth kind the framework does not provide: factory(provider, integration) -> httpx.Auth.
AuthFactory = Callable[[Any, Any], Any]


class RestItemSynced(SyncItemEvent):
    """One item of a declarative provider's resource."""

    integration_id: int
    resource: str
    item: dict[str, Any]


def _paginator(p: Any) -> Any:
    if isinstance(p, cfg.LinkHeaderPaging):
        return pg.LinkHeaderPaginator(rel=p.rel)
    if isinstance(p, cfg.PageNumberPaging):
        return pg.PageNumberPaginator(page_param=p.page_param, per_page_param=p.per_page_param,
                                      per_page=p.per_page, start=p.start)
    if isinstance(p, cfg.CursorPaging):
        return pg.CursorPaginator(cursor_param=p.cursor_param, cursor_path=p.cursor_path, has_more_path=None)
    if isinstance(p, cfg.HasMorePaging):
        return pg.CursorPaginator(cursor_param=p.cursor_param, cursor_path=p.cursor_path, has_more_path=p.has_more_path)
    if isinstance(p, cfg.OffsetPaging):
        return pg.OffsetPaginator(offset_param=p.offset_param, limit_param=p.limit_param, limit=p.limit,
                                  total_path=p.total_path)
    if isinstance(p, cfg.SinceKeysetPaging):
        return pg.SinceKeysetPaginator(key=p.key, id_key=p.id_key, since_param=p.since_param,
                                       page_param=p.page_param, per_page_param=p.per_page_param, per_page=p.per_page)
    return _SinglePage()


class _SinglePage:
    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(params)

    def next_request(self, response: Any, items: list[Any], params: dict[str, Any]) -> None:
        return None


def _get(item: Any, path: str) -> Any:
    if path == "$":
        return item
    for part in path.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def with_overlap(cursor: Any, seconds: float) -> Any:
    """Pure: the incremental parameter for ``cursor`` re-reading ``seconds`` before it (ISO
    timestamps keep their form, ``Z`` included; numbers are decreased; anything else is as is)."""
    if not seconds or cursor is None:
        return cursor
    if isinstance(cursor, (int, float)) and not isinstance(cursor, bool):
        return cursor - seconds
    if isinstance(cursor, str):
        try:
            when = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
        except ValueError:
            return cursor
        earlier = when - timedelta(seconds=seconds)
        if cursor.endswith("Z"):
            fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in cursor else "%Y-%m-%dT%H:%M:%SZ"
            return earlier.strftime(fmt)
        return earlier.isoformat()
    return cursor


def _hours_ago(hours: float | None) -> str | None:
    if hours is None:
        return None

    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


class _ApiKeyAuth(httpx.Auth):
    def __init__(self, value: str, header: str | None, query: str | None) -> None:
        self.value, self.header, self.query = value, header, query

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        if self.header:
            request.headers[self.header] = self.value
        elif self.query:
            request.url = request.url.copy_merge_params({self.query: self.value})
        yield request


class RestProvider(Provider):
    """A provider built from a ``RestConfig`` (``RestProvider.from_yaml(path)``)."""

    def __init__(self, config: cfg.RestConfig, *, auth: dict[str, AuthFactory] | None = None,
                 source: str | Path | None = None) -> None:
        self.config = config
        #: The YAML file it was loaded from (named in errors and in the migration command).
        self.source = str(source) if source is not None else None
        self.auth_factories = dict(auth or {})
        self._checked: set[str] = set()  # databases whose destination tables were found migrated
        self.key = config.key  # type: ignore[misc]
        self.base_url = config.base_url  # type: ignore[misc]
        self.http_headers = dict(config.headers)  # type: ignore[misc]
        self.default_sync_interval = config.sync_interval_minutes  # type: ignore[misc]
        self.chunk_size = config.chunk_size  # type: ignore[misc]
        rl = config.rate_limit
        self.default_rate_limit = RateLimit(rl.requests, rl.per_seconds) if rl else None  # type: ignore[misc]
        self.single = len(config.resources) == 1
        self.ordered_checkpoints = self.single  # type: ignore[misc]
        self.resources = {r.name: r for r in config.resources}
        auth_cfg = config.auth
        if isinstance(auth_cfg, cfg.OAuth2Auth) and auth_cfg.authorization_url and auth_cfg.token_url:
            from integrations_dagster.security.oauth2 import OAuth2Declaration

            self.oauth2 = OAuth2Declaration(  # type: ignore[misc]
                authorization_url=auth_cfg.authorization_url, token_url=auth_cfg.token_url,
                scopes=tuple(auth_cfg.scopes), scope_separator=auth_cfg.scope_separator, pkce=auth_cfg.pkce,
                token_auth_method=auth_cfg.token_auth_method,
            )
        #: This provider's staged listener: pass it to ``build_definitions(listeners=[...])``.
        self.listener = ListenerSpec(event_type=RestItemSynced, fn=self.upsert, batch=True, staged=True)

    @classmethod
    def from_yaml(cls, path: str | Path, *, auth: dict[str, AuthFactory] | None = None) -> RestProvider:
        return cls(cfg.load_config(path), auth=auth, source=path)

    def __repr__(self) -> str:
        return f"RestProvider({self.key!r}{', ' + self.source if self.source else ''})"

    def tables(self) -> dict[str, Any]:
        """The SQLAlchemy table of each resource's destination."""
        from integrations_dagster.store.rest_tables import destination_table

        return {r.name: destination_table(r.destination) for r in self.config.resources}

    def required_listeners(self) -> list[ListenerSpec]:
        """The engine refuses definitions that lack these (items would succeed without being stored)."""
        return [self.listener]

    # -- account setup -------------------------------------------------------------------------
    def setup_integration(self, callback: dict[str, Any], metadata: dict[str, Any]) -> Any:
        """Account setup for ``auth: {kind: oauth2}``: the token answer becomes refreshable credentials;
        with ``auth.identity`` the account is looked up (``GET identity.path``) and names the integration."""
        from integrations_dagster.http import ApiClient, ApiError
        from integrations_dagster.operations.connect import IntegrationSetup
        from integrations_dagster.security.oauth2 import credentials_from_callback

        auth = self.config.auth
        if not isinstance(auth, cfg.OAuth2Auth):
            raise IntegrationsError(f"provider {self.key!r}: account setup needs auth kind 'oauth2' "
                                    f"(this one is {auth.kind if auth else 'none'!r}); use `integrations add`")
        meta = dict(metadata)
        callback = dict(callback)
        creds = credentials_from_callback(
            callback, datetime.now(UTC), token_url=str(meta.pop("token_url", None) or auth.token_url or "") or None,
            client_id=meta.pop("client_id", None), client_secret=callback.pop("client_secret", None),
        )
        if "token" in creds:  # a long-lived token: this kind reads it as the access token
            creds = {"access_token": creds.pop("token")}
        name = f"{self.key} account"
        if auth.identity is not None:
            base = str(meta.get("base_url") or self.base_url)
            token = creds["access_token"]
            try:
                with ApiClient(base_url=base, headers={**self.http_headers, "Authorization": f"Bearer {token}"},
                               max_attempts=2, secrets=[token]) as api:
                    who = api.get_json(auth.identity.path)
            except ApiError as exc:
                raise IntegrationsError(f"connect {self.key}: the API refused the new token ({exc}); nothing was "
                                        "stored, run the OAuth flow again") from None
            value = _get(who, auth.identity.field)
            if value in (None, ""):
                raise IntegrationsError(f"connect {self.key}: GET {auth.identity.path} answered without "
                                        f"{auth.identity.field!r}")
            meta.setdefault("account", str(value))
            name = str(value)
        return IntegrationSetup(name=name, metadata=meta, credentials=creds)

    # -- destination schema ----------------------------------------------------------------------
    def check_migrated(self, conn: Any) -> None:
        """Raise ``RestSchemaError`` unless the destination tables are at the configuration's schema
        (checked once per database and process; ``migrate_destinations`` resets it)."""
        url = str(conn.engine.url)
        if url in self._checked:
            return
        from integrations_dagster.declarative.migrate import require_migrated

        require_migrated(conn, self)
        self._checked.add(url)

    def forget_checks(self) -> None:
        self._checked.clear()

    # -- auth ----------------------------------------------------------------------------------
    def http_auth(self, integration: Any) -> Any:
        auth = self.config.auth
        creds = integration.credentials

        def need(key: str) -> str:
            value = creds.get(key)
            if not value:
                raise CredentialsError(f"{integration}: auth '{auth.kind}' needs credentials['{key}']")  # type: ignore[union-attr]
            return str(value)

        if auth is None:
            return super().http_auth(integration)
        if isinstance(auth, cfg.BearerAuth):
            return _BearerAuth(need(auth.credential))
        if isinstance(auth, cfg.OAuth2Auth):
            from integrations_dagster.http.token_auth import StoredTokenAuth
            from integrations_dagster.security.oauth2 import OAuth2Strategy

            need("access_token")
            return StoredTokenAuth(OAuth2Strategy(token_url=auth.token_url), creds, integration_id=integration.id)
        if isinstance(auth, cfg.ApiKeyAuth):
            return _ApiKeyAuth(auth.prefix + need(auth.credential), auth.header, auth.query)
        if isinstance(auth, cfg.BasicAuth):
            return httpx.BasicAuth(need(auth.username_credential), need(auth.password_credential))
        factory = self.auth_factories.get(auth.kind)
        if factory is None:
            raise IntegrationsError(
                f"provider {self.key!r}: auth kind {auth.kind!r} needs its factory, passed explicitly: "
                "RestProvider.from_yaml(path, auth={'github_app': providers.github.app.github_auth})"
            )
        return factory(self, integration)

    # -- enumeration ---------------------------------------------------------------------------
    def reduce_checkpoints(self, checkpoints: list[Any]) -> Any:
        if self.single:
            return reduce_by_max(checkpoints)
        out: dict[str, Any] = {}
        for cp in checkpoints:
            for name, value in (cp or {}).items():
                out[name] = value if name not in out else reduce_by_max([out[name], value])
        return out or None

    def has_ordered_checkpoints(self) -> bool:
        return self.single

    def sync(self, integration: Any, session: Any) -> None:
        with session._store.engine.connect() as conn:
            self.check_migrated(conn)
        for resource in self.config.resources:
            self._sync_resource(integration, session, resource)

    def _sync_resource(self, integration: Any, session: Any, res: cfg.Resource) -> None:
        meta = integration.metadata
        try:
            path = res.path.format_map(_Strict(meta, res.name, "path"))
            params: dict[str, Any] = {
                k: (v.format_map(_Strict(meta, res.name, f"params.{k}")) if isinstance(v, str) else v)
                for k, v in res.params.items()
            }
        except ValueError as exc:
            raise IntegrationsError(f"{integration}: resource {res.name!r}: bad placeholder in path or params: {exc}") from None
        inc = res.incremental
        checkpoint: Any = None
        if inc is not None:
            cursor = session.cursor
            if not self.single and isinstance(cursor, dict):
                cursor = cursor.get(res.name)
            elif not self.single:
                cursor = None
            start = with_overlap(cursor, inc.overlap_seconds) if cursor is not None else (
                (meta.get(inc.initial_metadata) if inc.initial_metadata else None) or inc.initial
                or _hours_ago(inc.initial_hours_ago)
            )
            if start is not None:
                params[inc.param] = start
            checkpoint = cursor if cursor is not None else start
        ext_path = res.external_id
        cp_field = inc.checkpoint_field if inc else None
        single, name, iid = self.single, res.name, integration.id
        for page in session.http.paginate(path, params=params, paginator=_paginator(res.paginator), items_path=res.items_path):
            for raw in page:
                ext = _get(raw, ext_path) if isinstance(raw, dict) else None
                value = _get(raw, cp_field) if cp_field and isinstance(raw, dict) else None
                if ext is None or (cp_field and value is None):
                    missing = ext_path if ext is None else cp_field
                    wrapped = checkpoint if single or checkpoint is None else {name: checkpoint}
                    session.dispatch_invalid(raw, f"resource {name!r}: item has no {missing!r}",
                                             checkpoint_value=wrapped, external_id=ext)
                    continue
                if cp_field:
                    checkpoint = value
                session.dispatch(
                    RestItemSynced(integration_id=iid, resource=name, item=raw),
                    checkpoint_value=(value if single else {name: value}) if cp_field else None,
                    external_id=ext,
                )


    # -- processing ----------------------------------------------------------------------------
    def upsert(self, batch: StagedBatch) -> None:
        """Upsert a batch of this provider's items into its resources' destination tables (the
        staged listener ``self.listener``). Batches of another declarative provider are not its own."""
        from integrations_dagster.authoring.context import current_sync
        from integrations_dagster.store.rest_tables import upsert_sql

        if current_sync().integration.provider_key != self.key:
            return
        self.check_migrated(batch.connection)
        for res in self.config.resources:
            batch.execute(upsert_sql(res.destination, batch.dialect, resource=None if self.single else res.name))


class _Strict(dict):  # type: ignore[type-arg]
    """``format_map`` source that names the missing metadata key."""

    def __init__(self, meta: dict[str, Any], resource: str, field: str) -> None:
        super().__init__(meta)
        self.resource, self.field = resource, field

    def __missing__(self, key: str) -> Any:
        raise IntegrationsError(f"resource {self.resource!r}: {self.field} needs metadata[{key!r}]")


