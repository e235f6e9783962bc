"""Paginators, unit-level and driven through ``ApiClient.paginate`` over ``httpx.MockTransport``."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from integrations_dagster.http import (
    ApiClient,
    ApiError,
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PaginationError,
    PayloadValidationError,
    get_path,
)

BASE = "https://api.test"


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return ApiClient(base_url=BASE, transport=httpx.MockTransport(wrapped), sleep=lambda s: None), seen


def numbered_api(total: int, *, style: str) -> Callable[[httpx.Request], httpx.Response]:
    items = [{"id": i} for i in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        q = request.url.params
        if style == "page":
            page, per = int(q["page"]), int(q["per_page"])
            return httpx.Response(200, json=items[(page - 1) * per : page * per])
        if style == "offset":
            off, lim = int(q["offset"]), int(q["limit"])
            return httpx.Response(200, json={"results": items[off : off + lim], "total": total})
        raise AssertionError(style)

    return handler


@pytest.mark.parametrize(("total", "expected_requests"), [(0, 1), (1, 1), (25, 3), (30, 4), (31, 4)])
def test_page_number_stops_on_short_or_empty_page(total: int, expected_requests: int) -> None:
    api, seen = client_for(numbered_api(total, style="page"))
    pages = list(api.paginate("/items", params={"state": "all"}, paginator=PageNumberPaginator(per_page=10)))
    assert [i["id"] for p in pages for i in p] == list(range(total))
    assert len(seen) == expected_requests  # exact multiple needs one extra (empty) request
    assert [r.url.params["page"] for r in seen] == [str(n) for n in range(1, expected_requests + 1)]
    assert all(r.url.params["state"] == "all" and r.url.params["per_page"] == "10" for r in seen)


def test_page_number_custom_params_start_and_max_pages() -> None:
    p = PageNumberPaginator(page_param="p", per_page_param=None, per_page=2, start=0, max_pages=2)
    first = p.first_request({"x": 1})
    assert first == {"x": 1, "p": 0}
    resp = httpx.Response(200, json=[])
    nxt = p.next_request(resp, [1, 2], first)
    assert nxt is not None and nxt.params == {"x": 1, "p": 1} and nxt.url is None
    assert p.next_request(resp, [1, 2], nxt.params) is None  # max_pages reached
    assert p.next_request(resp, [1], first) is None  # short page
    with pytest.raises(ValueError):
        PageNumberPaginator(per_page=0)


def test_link_header_follows_absolute_next_url_until_missing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        headers = {}
        if page < 3:
            headers["Link"] = (
                f'<https://other.test/items?page={page + 1}&per_page=2>; rel="next", '
                f'<https://other.test/items?page=3&per_page=2>; rel="last"'
            )
        return httpx.Response(200, json=[{"page": page}], headers=headers)

    api, seen = client_for(handler)
    pages = list(api.paginate("/items", params={"per_page": 2}, paginator=LinkHeaderPaginator()))
    assert [p[0]["page"] for p in pages] == [1, 2, 3]
    assert str(seen[0].url) == f"{BASE}/items?per_page=2"
    # the absolute URL from the header is used verbatim (host included), params not duplicated
    assert [str(r.url) for r in seen[1:]] == [
        "https://other.test/items?page=2&per_page=2",
        "https://other.test/items?page=3&per_page=2",
    ]


def test_link_header_missing_or_self_referencing_stops() -> None:
    api, seen = client_for(lambda r: httpx.Response(200, json=[]))
    assert list(api.paginate("/items", paginator=LinkHeaderPaginator())) == [[]]
    assert len(seen) == 1

    api, seen = client_for(
        lambda r: httpx.Response(200, json=[{"a": 1}], headers={"Link": f'<{BASE}/loop>; rel="next"'})
    )
    assert len(list(api.paginate("/loop", paginator=LinkHeaderPaginator()))) == 1
    assert len(seen) == 1


def test_link_header_relative_next_is_resolved() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if len(calls) == 1:
            return httpx.Response(200, json=[1], headers={"Link": '</items?page=2>; rel="next"'})
        return httpx.Response(200, json=[2])

    api, _ = client_for(handler)
    assert list(api.paginate("/items", paginator=LinkHeaderPaginator())) == [[1], [2]]
    assert calls[1] == f"{BASE}/items?page=2"


def test_cursor_paginator_seed_002_style() -> None:
    pages = {
        None: {"snapshots": [1, 2], "new_sync_cursor": 100, "has_more": True},
        "100": {"snapshots": [3, 4], "new_sync_cursor": 200, "has_more": True},
        "200": {"snapshots": [5], "new_sync_cursor": 300, "has_more": False},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    api, seen = client_for(handler)
    paginator = CursorPaginator(cursor_path="new_sync_cursor")
    got = list(api.paginate("/pull", paginator=paginator, items_path="snapshots"))
    assert got == [[1, 2], [3, 4], [5]]
    assert [r.url.params.get("cursor") for r in seen] == [None, "100", "200"]


def test_cursor_paginator_resume_empty_first_page_and_nested_paths() -> None:
    api, seen = client_for(lambda r: httpx.Response(200, json={"data": [], "meta": {"next": "z", "more": False}}))
    p = CursorPaginator(cursor_param="after", cursor_path="meta.next", has_more_path="meta.more", initial_cursor="abc")
    assert list(api.paginate("/x", paginator=p, items_path="data")) == [[]]
    assert seen[0].url.params["after"] == "abc"


def test_cursor_paginator_without_has_more_stops_on_missing_cursor() -> None:
    bodies = iter([{"items": [1], "next_cursor": "b"}, {"items": [2], "next_cursor": None}])
    api, seen = client_for(lambda r: httpx.Response(200, json=next(bodies)))
    assert list(api.paginate("/x", paginator=CursorPaginator(has_more_path=None))) == [[1], [2]]
    assert len(seen) == 2


def test_cursor_paginator_refuses_inconsistent_metadata() -> None:
    p = CursorPaginator()
    with pytest.raises(PaginationError, match="missing"):
        p.next_request(httpx.Response(200, json={"has_more": True}), [1], {})
    with pytest.raises(PaginationError, match="did not advance"):
        p.next_request(httpx.Response(200, json={"has_more": True, "next_cursor": "a"}), [1], {"cursor": "a"})
    with pytest.raises(PaginationError, match="not JSON"):
        p.next_request(httpx.Response(200, text="<html>"), [1], {})


@pytest.mark.parametrize(("total", "with_total", "expected_requests"), [(0, False, 1), (20, False, 3), (20, True, 2), (21, True, 3), (5, True, 1)])
def test_offset_paginator(total: int, with_total: bool, expected_requests: int) -> None:
    api, seen = client_for(numbered_api(total, style="offset"))
    p = OffsetPaginator(limit=10, total_path="total" if with_total else None)
    pages = list(api.paginate("/o", paginator=p, items_path="results"))
    assert [i["id"] for page in pages for i in page] == list(range(total))
    assert len(seen) == expected_requests
    assert [int(r.url.params["offset"]) for r in seen] == [10 * k for k in range(expected_requests)]


def test_paginate_autodetects_item_list_and_rejects_non_lists() -> None:
    api, _ = client_for(lambda r: httpx.Response(200, json={"data": [{"a": 1}], "other": 1}))
    assert list(api.paginate("/x", paginator=PageNumberPaginator())) == [[{"a": 1}]]
    api, _ = client_for(lambda r: httpx.Response(200, json={"message": "nope"}))
    with pytest.raises(PayloadValidationError) as info:
        list(api.paginate("/x", paginator=PageNumberPaginator()))
    assert "/x" in str(info.value)


def test_paginate_without_prefetch_is_lazy_and_streams_one_page_at_a_time() -> None:
    api, seen = client_for(numbered_api(50, style="page"))
    gen = api.paginate("/items", paginator=PageNumberPaginator(per_page=10), prefetch=0)
    assert seen == []  # nothing sent before iteration
    next(gen)
    assert len(seen) == 1
    next(gen)
    assert len(seen) == 2


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_prefetch_runs_ahead_by_at_most_its_depth_and_keeps_order() -> None:
    api, seen = client_for(numbered_api(500, style="page"))
    gen = api.paginate("/items", paginator=PageNumberPaginator(per_page=10), prefetch=2)
    assert seen == []  # nothing sent before iteration
    first = next(gen)
    # the consumer holds page 1; two pages wait in the queue; the worker holds a fourth
    _wait_for(lambda: len(seen) == 4)
    time.sleep(0.1)
    assert len(seen) == 4  # bounded: it does not run away with the whole listing
    rest = list(gen)
    assert [i["id"] for page in [first, *rest] for i in page] == list(range(500))
    assert [int(r.url.params["page"]) for r in seen] == list(range(1, 52))  # in order, once each


def test_closing_a_prefetching_iterator_stops_the_worker() -> None:
    api, seen = client_for(numbered_api(500, style="page"))
    gen = api.paginate("/items", paginator=PageNumberPaginator(per_page=10), prefetch=3)
    next(gen)
    gen.close()
    settled = len(seen)
    assert settled <= 1 + 3 + 1
    time.sleep(0.1)
    assert len(seen) == settled  # nothing more is fetched after close
    assert not [t for t in threading.enumerate() if t.name == "integrations-prefetch"]


def test_prefetch_raises_an_error_at_the_page_where_it_happened() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page == 3:
            return httpx.Response(404, json={"message": "gone"})
        return httpx.Response(200, json=[{"id": page * 10 + k} for k in range(10)])

    api, _ = client_for(handler)
    got: list[int] = []
    with pytest.raises(ApiError) as info:
        for page in api.paginate("/items", paginator=PageNumberPaginator(per_page=10), prefetch=4):
            got.extend(i["id"] for i in page)
    assert info.value.status_code == 404
    assert got == [10 + k for k in range(10)] + [20 + k for k in range(10)]  # pages 1 and 2, then the error


def test_prefetch_worker_sees_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    values: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        values.append(var.get())
        page = int(request.url.params["page"])
        return httpx.Response(200, json=[{"id": page}] if page < 3 else [])

    api, _ = client_for(handler)
    var.set("sync-context")
    list(api.paginate("/items", paginator=PageNumberPaginator(per_page=1), prefetch=2))
    assert values == ["sync-context"] * 3


def test_get_path() -> None:
    data = {"a": {"b": [{"c": 1}]}}
    assert get_path(data, "a.b.0.c") == 1
    assert get_path(data, "a.b.-1.c") == 1
    assert get_path(data, "a.x") is None
    assert get_path(data, "a.b.5") is None
    assert get_path(data, None) is data
    assert json.dumps(get_path([1], "")) == "[1]"


# --- SinceKeysetPaginator (issue 9 point 3; end to end against the fake GitHub: test_github_edits.py) ----------
def test_since_keyset_asks_from_the_last_key_and_skips_the_overlap():
    from integrations_dagster.http import SinceKeysetPaginator

    p = SinceKeysetPaginator(key="updated_at", id_key="id", per_page=3)
    first = p.first_request({"since": "T0", "sort": "updated"})
    assert first == {"since": "T0", "sort": "updated", "page": 1, "per_page": 3}
    page = [{"id": 1, "updated_at": "T1"}, {"id": 2, "updated_at": "T2"}, {"id": 3, "updated_at": "T2"}]
    nxt = p.next_request(httpx.Response(200), page, first)
    assert nxt is not None and nxt.url is None
    assert (nxt.params["since"], nxt.params["page"]) == ("T2", 1)
    assert nxt.skip == {(2, "T2"), (3, "T2")}  # both share the last key: the next page repeats them
    # a malformed last item (no key) is part of the overlap too; the key is the last valid one
    page = [{"id": 4, "updated_at": "T3"}, {"id": 5, "updated_at": "T4"}, {"id": 6, "updated_at": None}]
    nxt = p.next_request(httpx.Response(200), page, nxt.params)
    assert nxt is not None and nxt.params["since"] == "T4" and nxt.skip == {(5, "T4"), (6, None)}
    # a whole page on the since key: page by number within that key
    same = [{"id": i, "updated_at": "T4"} for i in (7, 8, 9)]
    nxt = p.next_request(httpx.Response(200), same, nxt.params)
    assert nxt is not None and (nxt.params["since"], nxt.params["page"]) == ("T4", 2)
    assert p.next_request(httpx.Response(200), same[:2], nxt.params) is None  # a short page ends it


def test_since_keyset_through_the_client_yields_each_version_once():
    from integrations_dagster.http import SinceKeysetPaginator

    rows = [{"id": i, "updated_at": f"T{i // 2:02d}"} for i in range(11)]  # two per key

    def handler(request: httpx.Request) -> httpx.Response:
        since, page = request.url.params["since"], int(request.url.params["page"])
        chosen = [r for r in rows if r["updated_at"] >= since][(page - 1) * 4: page * 4]
        return httpx.Response(200, json=chosen)

    client, seen = client_for(handler)
    with client:
        got = [item for page in client.paginate("/items", params={"since": "T00"},
                                                paginator=SinceKeysetPaginator(per_page=4)) for item in page]
    assert got == rows  # in order, each once
    assert [r.url.params["since"] for r in seen] == ["T00", "T01", "T02", "T03", "T04"]  # the last short
