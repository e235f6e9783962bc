"""Short-lived tokens in the HTTP layer: refresh before expiry and once on a 401, shared by every run.

``StoredTokenAuth`` is an ``httpx.Auth`` built from an integration's stored credentials and a
*strategy* that knows one kind of token (``OAuth2Strategy``: refresh-token grant;
``providers.github.app.GitHubAppStrategy``: app JWT exchanged for an installation token). For each
request it:

1. asks the strategy whether the token it holds must be refreshed now (pure: expiry minus a margin);
2. sends the request with the token's ``Authorization`` header;
3. on a 401, refreshes once and sends the request again (a second 401 is the API's answer).

A refresh (bound to a store by ``bind``, which ``build_client`` does) takes the integration's
database lock (``store.credentials.credentials_lock``), re-reads the stored credentials under it,
and refreshes only when they still need it: a token that another thread, process or host stored
meanwhile is adopted as is. The new credentials are encrypted and written before the lock is
released, so a rotating refresh token is used exactly once, and every run of the integration
(every worker, every step) shares the token until it is due. In one process a thread lock makes the
other threads (the page prefetcher) wait for the refresh in flight instead of queueing on the
database.

A refused refresh raises ``RefreshRefused`` (an authentication failure for health, with a message
that says to connect the account again); a token endpoint that does not answer in time raises
``CredentialsError`` (a plain failure: retried at the next run).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from integrations_dagster.store import Store


class TokenStrategy(Protocol):
    """One kind of short-lived token kept in an integration's credentials."""

    name: str

    def header(self, credentials: dict[str, Any]) -> str | None:
        """The ``Authorization`` value for these credentials (None: no usable token yet)."""
        ...

    def needs_refresh(self, credentials: dict[str, Any], now: datetime, got_401: bool) -> bool:
        """Pure: must these credentials be refreshed before use at ``now``?"""
        ...

    def refresh(self, credentials: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Fetch new token fields; merged over the stored credentials and stored encrypted."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StoredTokenAuth(httpx.Auth):
    """``httpx.Auth`` for a refreshable token kept (encrypted) in the integration's credentials."""

    def __init__(
        self,
        strategy: TokenStrategy,
        credentials: dict[str, Any],
        *,
        integration_id: int | None = None,
        store: Store | None = None,
        clock: Callable[[], datetime] = _utcnow,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.credentials = dict(credentials)
        self.integration_id = integration_id
        self.store = store
        self.clock = clock
        #: Called with each new Authorization value (the client adds it to the values it scrubs).
        self.on_token = on_token
        self.refreshes = 0  # refreshes this object performed (not adopted ones): for tests and logs
        self._lock = threading.Lock()

    def bind(self, store: Any, integration_id: int) -> StoredTokenAuth:
        """Share refreshes through ``store`` (lock + encrypted credentials) for ``integration_id``."""
        self.store = store
        self.integration_id = integration_id
        return self

    # -- the httpx hook --------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        header = self._header_for_use()
        request.headers["Authorization"] = header
        response = yield request
        if response.status_code != 401:
            return
        fresh = self._refresh(stale=header, got_401=True)
        if fresh == header:
            return  # nothing better to offer: the 401 stands
        request.headers["Authorization"] = fresh
        yield request

    # -- token handling ----------------------------------------------------------------------------

    def _header_for_use(self) -> str:
        with self._lock:
            header = self.strategy.header(self.credentials)
            if header is not None and not self.strategy.needs_refresh(self.credentials, self.clock(), False):
                return header
        return self._refresh(stale=header, got_401=False)

    def _refresh(self, *, stale: str | None, got_401: bool) -> str:
        with self._lock:
            current = self.strategy.header(self.credentials)
            if current is not None and current != stale and not self.strategy.needs_refresh(
                self.credentials, self.clock(), False
            ):
                return current  # another thread refreshed while we waited
            if self.store is None or self.integration_id is None:
                merged = {**self.credentials, **self.strategy.refresh(self.credentials, self.clock())}
                self.refreshes += 1
            else:
                merged = self._refresh_shared(self.store, self.integration_id, stale=stale, got_401=got_401)
            self.credentials = merged
            header = self.strategy.header(merged)
            if header is None:  # pragma: no cover - a strategy bug
                raise RuntimeError(f"{self.strategy.name}: refresh produced no token")
            if self.on_token is not None:
                self.on_token(header)
            return header

    def _refresh_shared(self, store: Store, integration_id: int, *, stale: str | None, got_401: bool) -> dict[str, Any]:
        from integrations_dagster.store.credentials import credentials_lock, read_credentials, write_credentials

        cipher = store.cipher
        with credentials_lock(store, integration_id) as conn:
            stored = cipher.decrypt(read_credentials(conn, integration_id))
            stored_header = self.strategy.header(stored)
            now = self.clock()
            if stored_header is not None and not self.strategy.needs_refresh(stored, now, False):
                if stored_header != stale or not got_401:
                    return stored  # refreshed elsewhere meanwhile (or our copy was just old): adopt it
            merged = {**stored, **self.strategy.refresh(stored, now)}
            write_credentials(conn, integration_id, cipher.encrypt(merged))
            self.refreshes += 1
            return merged
