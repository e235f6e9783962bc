"""The configuration of a declarative REST provider: pydantic models, loadable from YAML.

Every model forbids unknown keys (a typo is an error, not a silently ignored option), and every
error is reported as ``RestConfigError`` naming the field by its path in the file
(``resources.0.paginator.kind``) and the problem. See docs/REST_PROVIDERS.md for the format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from integrations_dagster.errors import IntegrationsError

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PATH = re.compile(r"^(\$|[A-Za-z0-9_\-]+(\[\*\])?(\.[A-Za-z0-9_\-]+(\[\*\])?)*)$")


class RestConfigError(IntegrationsError, ValueError):
    """A declarative provider's configuration is invalid; the message names each field and problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- auth ---------------------------------------------------------------------------------------
class BearerAuth(_Model):
    kind: Literal["bearer"]
    credential: str = Field("token", description="credentials key holding the token")


class Identity(_Model):
    """Account setup: who connected (``GET path`` with the new token; ``field`` names the integration)."""

    path: str
    field: str = "login"

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        return _check_path(v)


class OAuth2Auth(_Model):
    kind: Literal["oauth2"]
    token_url: str | None = Field(None, description="token endpoint (else credentials['token_url'])")
    #: With ``token_url``: account setup through OAuth (``integrations connect KEY --authorize-url``).
    authorization_url: str | None = None
    scopes: list[str] = Field(default_factory=list)
    scope_separator: str = " "
    pkce: bool = True
    token_auth_method: Literal["client_secret_post", "client_secret_basic", "none"] = "client_secret_basic"
    identity: Identity | None = None

    @model_validator(mode="after")
    def _setup(self) -> OAuth2Auth:
        if self.authorization_url is not None and self.token_url is None:
            raise ValueError("authorization_url needs token_url (account setup exchanges the code there)")
        for name in ("authorization_url", "token_url"):
            url = getattr(self, name)
            if url is not None and not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{name} {url!r} is not an http(s) URL")
        return self


class GitHubAppAuth(_Model):
    kind: Literal["github_app"]


class ApiKeyAuth(_Model):
    kind: Literal["api_key"]
    credential: str = "api_key"
    header: str | None = None
    query: str | None = None
    prefix: str = ""

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query is None):
            raise ValueError("set exactly one of 'header' or 'query' (where the key is sent)")
        return self


class BasicAuth(_Model):
    kind: Literal["basic"]
    username_credential: str = "username"
    password_credential: str = "password"


Auth = Annotated[BearerAuth | OAuth2Auth | GitHubAppAuth | ApiKeyAuth | BasicAuth, Field(discriminator="kind")]


# --- paginators ---------------------------------------------------------------------------------
class LinkHeaderPaging(_Model):
    kind: Literal["link_header"]
    rel: str = "next"


class PageNumberPaging(_Model):
    kind: Literal["page_number"]
    page_param: str = "page"
    per_page_param: str | None = "per_page"
    per_page: int = Field(100, ge=1)
    start: int = 1


class CursorPaging(_Model):
    kind: Literal["cursor"]
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"


class HasMorePaging(_Model):
    """Tether-style: a cursor and a ``has_more`` flag in the body."""

    kind: Literal["has_more"]
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    has_more_path: str = "has_more"


class OffsetPaging(_Model):
    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, ge=1)
    total_path: str | None = None


class SinceKeysetPaging(_Model):
    """A list sorted ascending by a timestamp the API filters with an inclusive ``since`` (GitHub
    issues, ``sort=updated``): each next page asks ``since=<last key>``, so items edited while the
    list is read are never skipped (``http.SinceKeysetPaginator``; docs/RELIABILITY.md)."""

    kind: Literal["since_keyset"]
    key: str = "updated_at"
    id_key: str = "id"
    since_param: str = "since"
    page_param: str = "page"
    per_page_param: str = "per_page"
    per_page: int = Field(100, ge=1)


class SinglePage(_Model):
    kind: Literal["single"]


Paging = Annotated[
    LinkHeaderPaging | PageNumberPaging | CursorPaging | HasMorePaging | OffsetPaging | SinceKeysetPaging | SinglePage,
    Field(discriminator="kind"),
]


# --- resources ----------------------------------------------------------------------------------
class Incremental(_Model):
    checkpoint_field: str = Field(description="item field whose largest value becomes the cursor")
    param: str = Field(description="request parameter that receives the cursor")
    overlap_seconds: float = Field(0, ge=0, description="re-read this much before the cursor (timestamps)")
    initial: str | None = Field(None, description="first-run value (metadata[initial_metadata] wins)")
    initial_metadata: str | None = Field("since", description="metadata key holding the first-run value")
    initial_hours_ago: float | None = Field(None, gt=0, description="else start this many hours back (ISO UTC)")

    @field_validator("checkpoint_field")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)


ColumnType = Literal["integer", "bigint", "text", "string", "json", "boolean", "float"]


class Column(_Model):
    path: str = Field(description="dotted path in the item; 'a[*].b' collects b of every element; '$' the whole item")
    type: ColumnType = "text"
    length: int | None = Field(None, ge=1, description="for type 'string'")
    nullable: bool = True

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)

    @model_validator(mode="after")
    def _projection(self) -> Column:
        if "[*]" in self.path and self.type != "json":
            raise ValueError(f"path {self.path!r} collects a list: its type must be 'json'")
        if self.path.count("[*]") > 1:
            raise ValueError(f"path {self.path!r}: only one '[*]' is supported")
        if "[*]" in self.path and not self.path.split("[*]", 1)[1].startswith("."):
            raise ValueError(f"path {self.path!r}: '[*]' must be followed by '.field'")
        return self


class Destination(_Model):
    table: str
    primary_key: list[str] = Field(min_length=1)
    columns: dict[str, Column] = Field(min_length=1)

    @field_validator("columns", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:  # ``title: title`` means {path: title}
        if isinstance(v, dict):
            return {k: ({"path": c} if isinstance(c, str) else c) for k, c in v.items()}
        return v

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"{v!r} is not a table name (lower case letters, digits, '_'; at most 63)")
        return v

    @model_validator(mode="after")
    def _keys(self) -> Destination:
        for name in self.columns:
            if not _IDENT.match(name):
                raise ValueError(f"column {name!r} is not a column name (lower case letters, digits, '_')")
        if "integration_id" in self.columns:
            raise ValueError("column 'integration_id' is added by the framework; do not declare it")
        unknown = [k for k in self.primary_key if k != "integration_id" and k not in self.columns]
        if unknown:
            raise ValueError(f"primary_key names undeclared column(s): {', '.join(unknown)}")
        for k in self.primary_key:
            if k in self.columns and self.columns[k].type == "json":
                raise ValueError(f"primary_key column {k!r} cannot be of type 'json'")
        return self

    @property
    def key_columns(self) -> list[str]:
        keys = list(self.primary_key)
        return keys if "integration_id" in keys else ["integration_id", *keys]


class Resource(_Model):
    name: str
    path: str = Field(description="request path; {name} is replaced by metadata['name']")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    paginator: Paging = Field(default_factory=lambda: SinglePage(kind="single"))
    items_path: str | None = Field(None, description="dotted path of the item list (None: the body, or its 'items'/'data'/...)")
    incremental: Incremental | None = None
    external_id: str = Field(description="item field that identifies it")
    destination: Destination

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"{v!r} is not a resource name (lower case letters, digits, '_')")
        return v

    @field_validator("external_id")
    @classmethod
    def _ext(cls, v: str) -> str:
        return _check_path(v)


class RateLimitConfig(_Model):
    requests: int = Field(ge=1)
    per_seconds: float = Field(gt=0)


class RestConfig(_Model):
    key: str
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    rate_limit: RateLimitConfig | None = None
    sync_interval_minutes: int | None = Field(None, ge=1)
    chunk_size: int | None = Field(None, ge=1)
    resources: list[Resource] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"{v!r} is not a provider key (lower case letters, digits, '_')")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _unique(self) -> RestConfig:
        for what, values in (("resource name", [r.name for r in self.resources]),
                             ("destination table", [r.destination.table for r in self.resources])):
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"{what} used twice: {', '.join(dup)}")
        return self


def _check_path(v: str) -> str:
    if not _PATH.match(v):
        raise ValueError(f"{v!r} is not a field path (e.g. 'id', 'user.login', 'labels[*].name', '$')")
    return v


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")) or "<root>"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return f"invalid REST provider configuration ({source}):\n" + "\n".join(lines)


def parse_config(data: Any, *, source: str = "config") -> RestConfig:
    """Validate a dict as a ``RestConfig``; raises ``RestConfigError`` naming every bad field."""
    try:
        return RestConfig.model_validate(data)
    except ValidationError as exc:
        raise RestConfigError(_describe(exc, source)) from None


def load_config(path: str | Path) -> RestConfig:
    """Load and validate a YAML file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise RestConfigError(f"REST provider configuration {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise RestConfigError(f"{p} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(p))
