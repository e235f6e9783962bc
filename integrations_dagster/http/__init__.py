"""HTTP layer for providers: a retrying, budget-aware, redacting ``ApiClient`` and paginators.

A provider builds one ``ApiClient`` per integration and picks a paginator::

    with ApiClient(base_url="https://api.github.com", auth=..., budget=..., recorder=...) as api:
        for raw, issue, error in api.iter_items("/repos/o/r/issues", params={"state": "all"},
                                                paginator=LinkHeaderPaginator(), item_model=Issue):
            ...
"""

from integrations_dagster.http.client import (
    DEFAULT_TIMEOUT,
    ApiClient,
    InMemoryRateBudget,
    RateBudget,
    RequestLogEntry,
    RequestRecorder,
)
from integrations_dagster.http.errors import (
    ApiError,
    AuthenticationError,
    BudgetExhausted,
    HttpError,
    PaginationError,
    PayloadValidationError,
    RateLimitedError,
)
from integrations_dagster.http.paginators import (
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PageRequest,
    Paginator,
    PullPage,
    SinceKeysetPaginator,
    SyncCursorPaginator,
    get_path,
)
from integrations_dagster.security.redact import redact_headers, redact_text, redact_url
from integrations_dagster.http.retry_after import backoff_delay, parse_retry_after, reset_delay

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiClient",
    "ApiError",
    "AuthenticationError",
    "BudgetExhausted",
    "CursorPaginator",
    "HttpError",
    "InMemoryRateBudget",
    "LinkHeaderPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "PageRequest",
    "PaginationError",
    "Paginator",
    "SinceKeysetPaginator",
    "PayloadValidationError",
    "PullPage",
    "RateBudget",
    "RateLimitedError",
    "RequestLogEntry",
    "RequestRecorder",
    "SyncCursorPaginator",
    "backoff_delay",
    "get_path",
    "parse_retry_after",
    "redact_headers",
    "redact_text",
    "redact_url",
    "reset_delay",
]
