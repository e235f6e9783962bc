"""A provider behind OAuth2 (``integrations_dagster.testing.fake_oauth``) and a worker process.

``python -m tests.support.oauth_app DB_URL INTEGRATION_ID GO``: waits for the file GO (so several
workers start together), builds the integration's HTTP client exactly as a sync does, GETs
``/items`` and prints ``{"items": n, "refreshes": r}`` (r: refreshes this process performed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from integrations_dagster import Provider, SyncItemEvent
from integrations_dagster.authoring.context import build_client
from integrations_dagster.store import Store


class OAuthItem(SyncItemEvent):
    integration_id: int
    item: dict[str, Any]


class OAuthDemoProvider(Provider):
    key = "oauth_demo"

    def sync(self, integration, session):  # type: ignore[no-untyped-def]
        for raw in session.http.get_json("/items")["items"]:
            session.dispatch(OAuthItem(integration_id=integration.id, item=raw),
                             checkpoint_value=raw["updated_at"], external_id=str(raw["id"]))


def main() -> None:
    url, integration_id, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    store = Store.for_url(url)
    integration = store.get_integration(integration_id)
    while not go.exists():
        time.sleep(0.005)
    client = build_client(store, OAuthDemoProvider(), integration, None)
    try:
        body = client.get_json("/items")
        auth = client._http.auth
        print(json.dumps({"items": len(body["items"]), "refreshes": getattr(auth, "refreshes", None)}))
    finally:
        client.close()


if __name__ == "__main__":
    main()
