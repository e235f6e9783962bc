"""Exceptions raised by the HTTP layer.

Every message is built from an already-redacted endpoint and a scrubbed message, so an
exception can be logged, stored or shown in the Dagster UI as-is. ``RateLimitedError`` and
``BudgetExhausted`` also subclass the engine's ``RateLimited`` so the engine defers the item
(without spending one of its tries) instead of failing it.
"""

from __future__ import annotations

import json
from typing import Any

from integrations_dagster.errors import RateLimited
from integrations_dagster.security.redact import redact_text, redact_url

RAW_PREVIEW_CHARS = 500


class HttpError(Exception):
    """Base class of every error raised by ``integrations_dagster.http``."""


class ApiError(HttpError):
    """The API answered with an error (or could not be reached) after any retries.

    ``status_code`` is ``None`` for transport errors (connect/read failures, timeouts).
    """

    auth_failure: bool = False

    def __init__(self, status_code: int | None, endpoint: str, message: str) -> None:
        self.status_code = status_code
        self.endpoint = redact_url(endpoint)
        self.message = message
        status = "transport error" if status_code is None else f"HTTP {status_code}"
        Exception.__init__(self, f"{status} from {self.endpoint}: {message}")


class AuthenticationError(ApiError):
    """401, or a 403 that is not a rate limit: the credentials are wrong, expired or lack scope.

    Retrying cannot help; the operator must fix the credentials, hence ``auth_failure``.
    """

    auth_failure = True


class RateLimitedError(ApiError, RateLimited):
    """The API kept rate-limiting us; retry no sooner than ``retry_after`` seconds."""

    def __init__(
        self,
        retry_after: float,
        endpoint: str = "",
        message: str | None = None,
        status_code: int | None = 429,
    ) -> None:
        self.retry_after = max(0.0, float(retry_after))
        ApiError.__init__(
            self,
            status_code,
            endpoint,
            message or f"rate limited; retry after {self.retry_after:g} s",
        )


class BudgetExhausted(RateLimitedError):
    """Our own request budget for this integration is spent for longer than we may wait.

    Raised *before* a request is sent, so no API quota was used.
    """

    def __init__(self, retry_after: float, endpoint: str = "", message: str | None = None) -> None:
        super().__init__(
            retry_after,
            endpoint,
            message or f"request budget exhausted; retry after {max(0.0, float(retry_after)):g} s",
            status_code=None,
        )


class PaginationError(HttpError):
    """The API's paging metadata is inconsistent (e.g. ``has_more`` with no cursor).

    Stopping silently there would drop items, so it is an error instead.
    """


def _preview(raw: Any, secrets: list[str] | tuple[str, ...]) -> str:
    try:
        text = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(raw)
    text = redact_text(text, secrets)
    if len(text) > RAW_PREVIEW_CHARS:
        text = text[:RAW_PREVIEW_CHARS] + f"... ({len(text)} chars)"
    return text


class PayloadValidationError(HttpError, ValueError):
    """A response (or one item of it) did not match the expected model.

    ``raw`` keeps the full payload on the instance so the caller can store it for inspection;
    ``str()`` shows at most ``RAW_PREVIEW_CHARS`` of it, with known secrets masked.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        field: str,
        message: str,
        raw: Any,
        secrets: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.endpoint = redact_url(endpoint)
        self.field = field
        self.message = redact_text(message, secrets)
        self.raw = raw
        super().__init__(
            f"invalid payload from {self.endpoint}: field {field!r}: {self.message}; "
            f"raw: {_preview(raw, secrets)}"
        )
