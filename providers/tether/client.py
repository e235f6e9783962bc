"""The bundled Tether provider's push and pull over HTTP (stdlib ``urllib``; no provider knowledge in the framework)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

from integrations_dagster.engine.push import Applied, Conflict, Mutation, PushOutcome, Rejected


class TransportError(RuntimeError):
    pass


def _post(url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError as exc:  # URLError, HTTPError (503), timeouts
        raise TransportError(f"POST {url} failed: {exc}") from exc


def push(base_url: str, batch: list[Mutation]) -> list[PushOutcome]:
    answer = _post(
        f"{base_url}/push",
        {"mutations": [
            {"mutation_id": m.mutation_id, "entity": m.entity, "key": m.key, "operation": m.operation, "payload": m.payload}
            for m in batch
        ]},
    )
    out: list[PushOutcome] = [Applied(mid) for mid in answer.get("applied", [])]
    out += [Rejected(r["mutation_id"], r["reason"], r.get("details")) for r in answer.get("rejected", [])]
    out += [Conflict(c["mutation_id"], c["server_state"]) for c in answer.get("conflicts", [])]
    return out


def pull_pages(base_url: str, cursor: int | None) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Tether's pull paginator: cursor in; ``snapshots``, ``new_sync_cursor``, ``has_more`` out."""
    while True:
        page = _post(f"{base_url}/pull", {"cursor": cursor})
        cursor = int(page["new_sync_cursor"])
        yield list(page["snapshots"]), cursor
        if not page.get("has_more"):
            return
