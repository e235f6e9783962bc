"""Swappable paginators, in the style of dlt's ``rest_api`` paginators.

Why objects rather than a loop per provider: paging bugs (stopping one page early, looping
forever on a repeated cursor) lose items silently. Each strategy is written and tested once;
a provider picks one in a line::

    client.paginate("/repos/acme/widgets/issues", paginator=LinkHeaderPaginator())
    client.paginate("/pull", paginator=CursorPaginator(cursor_path="new_sync_cursor"))

Protocol: ``first_request(params)`` returns the query params of the first page (the first page
always goes to the caller's path). ``next_request(response, items, params)`` looks at the page
just fetched (``params`` are the params that produced it) and returns a ``PageRequest`` for the
next page, which carries new params and optionally a new URL, or ``None`` to stop.
Paginators are stateless, so one instance can be shared by many concurrent iterations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from integrations_dagster.http.errors import PaginationError


@dataclass(frozen=True)
class PageRequest:
    """The next page to fetch: ``params`` and, if the API hands out one, an absolute ``url``.

    When ``url`` is set it replaces the path (its own query string is kept, and ``params`` are
    merged on top); when it is ``None`` the same path is requested with the new ``params``.
    """

    params: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    #: Items of the next page already yielded (the page overlaps this one), by the paginator's
    #: ``identity(item)``: dropped before they reach the caller (``SinceKeysetPaginator``).
    skip: frozenset[Any] = frozenset()


@runtime_checkable
class Paginator(Protocol):
    """What ``ApiClient.paginate`` needs from a paging strategy."""

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None: ...


def get_path(data: Any, path: str | None) -> Any:
    """Follow a dotted ``path`` (``"meta.next_cursor"``, list indexes allowed) into JSON data.

    Returns ``None`` when any step is missing, so callers can treat "absent" uniformly.
    """
    if path is None or path == "":
        return data
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return None
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return None
            current = current[index]
        else:
            return None
    return current


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise PaginationError(f"page body is not JSON: {exc}") from None


class LinkHeaderPaginator:
    """Follow RFC 8288 ``Link: <url>; rel="next"`` headers (GitHub, GitLab, many others).

    The next request uses the absolute URL from the header verbatim (it already carries every
    query param), so params are not re-sent. Stops when there is no ``next`` link. A ``next``
    link pointing to the URL just fetched is treated as the end, never as a loop.
    """

    def __init__(self, rel: str = "next") -> None:
        self.rel = rel

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(params)

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None:
        link = response.links.get(self.rel)
        url = link.get("url") if link else None
        if not url:
            return None
        absolute = str(response.request.url.join(url)) if response.request is not None else url
        if response.request is not None and absolute == str(response.request.url):
            return None
        return PageRequest(params={}, url=absolute)


class PageNumberPaginator:
    """``?page=N&per_page=M``: stop on a short or empty page (seed 001's loop).

    ``per_page_param=None`` means the API does not take a page size; ``per_page`` is then the
    size the API is known to use, needed to recognise the last (short) page.
    ``max_pages`` is a safety net against APIs that ignore ``page`` and repeat page 1 forever.
    """

    def __init__(
        self,
        page_param: str = "page",
        per_page_param: str | None = "per_page",
        per_page: int = 100,
        start: int = 1,
        max_pages: int | None = None,
    ) -> None:
        if per_page < 1:
            raise ValueError("per_page must be >= 1")
        self.page_param = page_param
        self.per_page_param = per_page_param
        self.per_page = per_page
        self.start = start
        self.max_pages = max_pages

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        out[self.page_param] = self.start
        if self.per_page_param:
            out[self.per_page_param] = self.per_page
        return out

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None:
        if len(items) < self.per_page:
            return None
        page = int(params.get(self.page_param, self.start))
        if self.max_pages is not None and page - self.start + 1 >= self.max_pages:
            return None
        out = dict(params)
        out[self.page_param] = page + 1
        return PageRequest(params=out)


class SinceKeysetPaginator:
    """Page a list sorted ascending by a timestamp the API also filters on (``since``), by
    re-asking from the last key seen instead of by page number (GitHub ``/issues?sort=updated``).

    Why: page numbers over a list sorted by ``updated`` lose items when the list changes while it is
    read. An item edited during the listing moves to the end, every item after it moves up one
    place, and the first item of the next page slides onto the page already read: it is never
    seen, and the cursor passes it. Asking ``since=<last key of the page>`` instead cannot skip
    anything: every item with a key below the last one was on the page, and an item edited later
    gets a newer key and comes back in a later page. The pages overlap by the items that share
    the last key (``since`` is inclusive); those are dropped from the next page by
    ``identity`` = (id, key), so an item edited meanwhile (same id, newer key) is yielded again.

    A full page whose items all share the ``since`` key (more than ``per_page`` items updated in
    the same second) is followed by page number within that key, and the next key again after it.
    Stops on a short page. ``since`` must be inclusive (GitHub's is; ``FakeGitHub``'s is).
    """

    def __init__(
        self,
        key: str = "updated_at",
        id_key: str = "id",
        since_param: str = "since",
        page_param: str = "page",
        per_page_param: str = "per_page",
        per_page: int = 100,
    ) -> None:
        if per_page < 1:
            raise ValueError("per_page must be >= 1")
        self.key, self.id_key, self.since_param = key, id_key, since_param
        self.page_param, self.per_page_param, self.per_page = page_param, per_page_param, per_page

    def identity(self, item: Any) -> Any:
        if not isinstance(item, Mapping):
            return None
        return (item.get(self.id_key), item.get(self.key))

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, self.page_param: 1, self.per_page_param: self.per_page}

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None:
        if len(items) < self.per_page:
            return None
        keys = [i.get(self.key) if isinstance(i, Mapping) else None for i in items]
        last = next((k for k in reversed(keys) if isinstance(k, str) and k), None)
        # The tail the next page repeats: every item from the last one with a smaller key on.
        tail: list[Any] = []
        for item, k in zip(reversed(items), reversed(keys)):
            if isinstance(k, str) and k and k != last:
                break
            tail.append(self.identity(item))
        out = dict(params)
        if last is None or last == str(params.get(self.since_param)):
            out[self.page_param] = int(params.get(self.page_param, 1)) + 1  # a whole page on one key
        else:
            out[self.since_param], out[self.page_param] = last, 1
        return PageRequest(params=out, skip=frozenset(tail))


class CursorPaginator:
    """Opaque cursor in the body plus a ``has_more`` flag (seed 002: ``new_sync_cursor``).

    Stops when ``has_more`` is false. With ``has_more_path=None`` it stops when the cursor is
    missing/empty instead. ``has_more`` true with no cursor, or a cursor that does not change,
    raises ``PaginationError``: stopping there would silently drop items, looping would never end.
    ``initial_cursor`` resumes from a stored cursor.
    """

    def __init__(
        self,
        cursor_param: str = "cursor",
        cursor_path: str = "next_cursor",
        has_more_path: str | None = "has_more",
        initial_cursor: Any = None,
    ) -> None:
        self.cursor_param = cursor_param
        self.cursor_path = cursor_path
        self.has_more_path = has_more_path
        self.initial_cursor = initial_cursor

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        if self.initial_cursor is not None:
            out[self.cursor_param] = self.initial_cursor
        return out

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None:
        body = _json_body(response)
        cursor = get_path(body, self.cursor_path)
        if self.has_more_path is not None:
            if not get_path(body, self.has_more_path):
                return None
            if cursor is None or cursor == "":
                raise PaginationError(
                    f"{self.has_more_path!r} is true but {self.cursor_path!r} is missing"
                )
        elif cursor is None or cursor == "":
            return None
        if self.cursor_param in params and params[self.cursor_param] == cursor:
            raise PaginationError(f"cursor {self.cursor_path!r} did not advance; refusing to loop")
        out = dict(params)
        out[self.cursor_param] = cursor
        return PageRequest(params=out)


class OffsetPaginator:
    """``?offset=N&limit=M``: stop on a short/empty page, or once ``offset >= total``.

    ``total_path`` is the dotted path of the total count in the body, when the API gives one;
    with it, an exact multiple of ``limit`` needs no extra empty request.
    """

    def __init__(
        self,
        offset_param: str = "offset",
        limit_param: str = "limit",
        limit: int = 100,
        total_path: str | None = None,
        start: int = 0,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.limit = limit
        self.total_path = total_path
        self.start = start

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        out[self.offset_param] = self.start
        out[self.limit_param] = self.limit
        return out

    def next_request(
        self, response: httpx.Response, items: list[Any], params: dict[str, Any]
    ) -> PageRequest | None:
        if len(items) < self.limit:
            return None
        offset = int(params.get(self.offset_param, self.start)) + len(items)
        if self.total_path is not None:
            total = get_path(_json_body(response), self.total_path)
            if total is not None:
                try:
                    if offset >= int(total):
                        return None
                except (TypeError, ValueError):
                    pass
        out = dict(params)
        out[self.offset_param] = offset
        return PageRequest(params=out)


@dataclass(frozen=True)
class PullPage:
    """One page of Tether's pull protocol: the snapshots, the cursor to resume from, more to come."""

    snapshots: list[Any]
    new_sync_cursor: Any
    has_more: bool


class SyncCursorPaginator:
    """Tether's pull protocol (seed 002): the stored cursor in (``None`` = a full pull), and per page
    ``snapshots``, ``new_sync_cursor`` and ``has_more`` out; repeat with the new cursor while
    ``has_more``. The request is a POST with the cursor in the JSON body (``method``); use it with
    ``ApiClient.pull_pages``, which yields ``PullPage``s so a provider can checkpoint each snapshot
    with its page's ``new_sync_cursor``.

    ``has_more`` true with no cursor, or with a cursor that did not advance, raises
    ``PaginationError`` (stopping would drop snapshots; repeating would never end).
    """

    method = "POST"

    def __init__(self, cursor: Any = None, *, cursor_param: str = "cursor", items_path: str = "snapshots",
                 cursor_path: str = "new_sync_cursor", has_more_path: str = "has_more") -> None:
        self.cursor = cursor
        self.cursor_param = cursor_param
        self.items_path = items_path
        self.cursor_path = cursor_path
        self.has_more_path = has_more_path

    def first_request(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        out[self.cursor_param] = self.cursor
        return out

    def page(self, body: Any) -> PullPage:
        if not isinstance(body, Mapping):
            raise PaginationError(f"pull answer is not a JSON object: {type(body).__name__}")
        snapshots = get_path(body, self.items_path)
        if snapshots is None:
            snapshots = []
        if not isinstance(snapshots, list):
            raise PaginationError(f"{self.items_path!r} is not a list")
        return PullPage(list(snapshots), get_path(body, self.cursor_path), bool(get_path(body, self.has_more_path)))

    def next_request(self, response: httpx.Response, items: list[Any], params: dict[str, Any]) -> PageRequest | None:
        return self.next_after(self.page(_json_body(response)), params)

    def next_after(self, page: PullPage, params: dict[str, Any]) -> PageRequest | None:
        if not page.has_more:
            return None
        if page.new_sync_cursor is None or page.new_sync_cursor == "":
            raise PaginationError(f"{self.has_more_path!r} is true but {self.cursor_path!r} is missing")
        if params.get(self.cursor_param) == page.new_sync_cursor:
            raise PaginationError(f"cursor {self.cursor_path!r} did not advance; refusing to loop")
        out = dict(params)
        out[self.cursor_param] = page.new_sync_cursor
        return PageRequest(params=out)
