"""``RestProvider``: a pull provider defined entirely by a ``RestConfig`` (see docs/REST_PROVIDERS.md).

Enumeration: per resource, GET ``path`` (metadata placeholders filled in) with ``params`` and the
incremental parameter (the cursor minus ``overlap_seconds``, else the first-run value), page with
the configured paginator, and dispatch every item as a ``RestItemSynced`` with its checkpoint field
and external id. An item without them is recorded as an invalid item (it holds the cursor and can
be skipped), never dropped. One resource: the cursor is the largest checkpoint (as in
``providers/github/issues.py``); several: a dict ``{resource: checkpoint}``.

Processing: one staged listener (``upsert_rest_items``) moves each batch into the resource's
destination table with one ``INSERT ... SELECT`` from the staged items on both databases: the
payloads never come back through Python.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from integrations_dagster.authoring.events import SyncItemEvent
from integrations_dagster.authoring.listeners import listener
from integrations_dagster.authoring.provider import Provider, _BearerAuth, reduce_by_max
from integrations_dagster.authoring.rate_limit import RateLimit
from integrations_dagster.authoring.staged import StagedBatch
from integrations_dagster.declarative import config as cfg
from integrations_dagster.declarative.tables import destination_table, ensure_destination, upsert_sql
from integrations_dagster.errors import CredentialsError, IntegrationsError
from integrations_dagster.http import paginators as pg

#: Auth kinds provided outside the framework (``providers.github.app`` registers ``github_app``):
#: kind -> factory(provider, integration) -> httpx.Auth.
AUTH_FACTORIES: dict[str, Callable[[Any, Any], Any]] = {}
#: Every RestProvider built in this process, by key (the staged listener finds its config here).
REGISTRY: dict[str, RestProvider] = {}


def register_auth(kind: str, factory: Callable[[Any, Any], Any]) -> None:
    AUTH_FACTORIES[kind] = factory


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

    def __init__(self, config: cfg.RestConfig) -> None:
        self.config = config
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
        REGISTRY[config.key] = self

    @classmethod
    def from_yaml(cls, path: str | Path) -> RestProvider:
        return cls(cfg.load_config(path))

    def tables(self) -> dict[str, Any]:
        """The SQLAlchemy table of each resource's destination."""
        return {r.name: destination_table(r.destination) for r in self.config.resources}

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
        factory = AUTH_FACTORIES.get(auth.kind)
        if factory is None:
            raise IntegrationsError(
                f"provider {self.key!r}: auth kind {auth.kind!r} is not available in this process "
                "(for 'github_app' import providers.github.app, which registers it)"
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


class _Strict(dict):  # type: ignore[type-arg]
    """``format_map`` source that names the missing metadata key."""

    def __init__(self, meta: dict[str, Any], resource: str, field: str) -> None:
        super().__init__(meta)
        self.resource, self.field = resource, field

    def __missing__(self, key: str) -> Any:
        raise IntegrationsError(f"resource {self.resource!r}: {self.field} needs metadata[{key!r}]")


@listener(RestItemSynced, staged=True)
def upsert_rest_items(batch: StagedBatch) -> None:
    """Upsert a batch of a declarative provider's items into its resources' destination tables."""
    from integrations_dagster.authoring.context import current_sync

    key = current_sync().integration.provider_key
    provider = REGISTRY.get(key)
    if provider is None:
        raise IntegrationsError(f"no declarative provider {key!r} is loaded in this process")
    for res in provider.config.resources:
        ensure_destination(batch.connection, res.destination)
        batch.execute(upsert_sql(res.destination, batch.dialect, resource=None if provider.single else res.name))
