"""Tether's pull protocol as a paginator (``SyncCursorPaginator``) through ``ApiClient.pull_pages``:
against the fake Tether server over real HTTP, and against answers that would drop or loop."""

from __future__ import annotations

import json

import httpx
import pytest

from integrations_dagster.http import ApiClient, PaginationError, PullPage, SyncCursorPaginator
from providers.tether.fake_server import TetherState, serve


def test_pull_pages_follow_has_more_from_the_stored_cursor() -> None:
    state = TetherState(page_size=2)
    for k in range(5):
        state.put("task", str(k), {"title": f"s{k}"})
    srv = serve(state)
    try:
        with ApiClient(base_url=f"http://127.0.0.1:{srv.server_address[1]}", sleep=lambda s: None) as api:
            pages = list(api.pull_pages("/pull", paginator=SyncCursorPaginator(None)))
            assert [(len(p.snapshots), p.new_sync_cursor, p.has_more) for p in pages] == [
                (2, 2, True), (2, 4, True), (1, 5, False)]
            assert [s["key"] for p in pages for s in p.snapshots] == ["0", "1", "2", "3", "4"]
            resumed = list(api.pull_pages("/pull", paginator=SyncCursorPaginator(4)))
            assert [[s["key"] for s in p.snapshots] for p in resumed] == [["4"]]
            assert list(api.pull_pages("/pull", paginator=SyncCursorPaginator(5))) == [PullPage([], 5, False)]
    finally:
        srv.shutdown()
        srv.server_close()


def _client(answers: list[dict]) -> tuple[ApiClient, list[dict]]:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=answers[min(len(sent), len(answers)) - 1])

    return ApiClient(base_url="http://tether.test", transport=httpx.MockTransport(handler), sleep=lambda s: None), sent


def test_cursor_is_posted_as_json_and_null_means_a_full_pull() -> None:
    api, sent = _client([{"snapshots": [{"k": 1}], "new_sync_cursor": 10, "has_more": True},
                         {"snapshots": [], "new_sync_cursor": 10, "has_more": False}])
    list(api.pull_pages("/pull", paginator=SyncCursorPaginator(None)))
    assert sent == [{"cursor": None}, {"cursor": 10}]


@pytest.mark.parametrize("answer, message", [
    ({"snapshots": [], "has_more": True}, "is missing"),
    ({"snapshots": [], "new_sync_cursor": 7, "has_more": True}, "did not advance"),
    ({"snapshots": {"a": 1}, "new_sync_cursor": 8, "has_more": False}, "is not a list"),
])
def test_answers_that_would_drop_or_loop_raise(answer: dict, message: str) -> None:
    api, _ = _client([answer])
    with pytest.raises(PaginationError, match=message):
        list(api.pull_pages("/pull", paginator=SyncCursorPaginator(7)))
