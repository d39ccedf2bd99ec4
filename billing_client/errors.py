"""Exceptions of the client: HTTP errors with the contract's code and message, and timeouts.

An operation that fails (insufficient_funds and the like) is not an
exception: it is an Operation whose `error` says why.
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Every exception the client raises on purpose."""


class ApiError(BillingError):
    """The API answered with an error: `{"error": {"code", "message", "details"?}}`.

    `status` is the HTTP status, or None when the API could not be reached at all.
    """

    def __init__(self, status: int | None, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class ValidationError(ApiError):
    """422 validation_error: `details` names the offending fields."""


class UnauthorizedError(ApiError):
    """401 unauthorized: the token is missing or not accepted."""


class NotFoundError(ApiError):
    """404 not_found: no such account, operation or route."""


class ConflictError(ApiError):
    """409 idempotency_conflict or account_conflict."""


class UnavailableError(ApiError):
    """503 unavailable, or no connection, after every attempt the client makes."""


class EventsPrunedError(ApiError):
    """410 events_pruned: the feed no longer keeps the events right after the `after` asked.

    `retained_after` is the smallest `after` the feed still serves (None if the
    answer did not say); the events between are gone from the feed for good.
    """

    def __init__(self, status: int | None, code: str, message: str, details: Any = None) -> None:
        super().__init__(status, code, message, details)
        retained_after = details.get("retained_after") if isinstance(details, dict) else None
        readable = isinstance(retained_after, int) and not isinstance(retained_after, bool)
        self.retained_after: int | None = retained_after if readable else None


_BY_CODE: dict[str, type[ApiError]] = {
    "validation_error": ValidationError,
    "unauthorized": UnauthorizedError,
    "not_found": NotFoundError,
    "idempotency_conflict": ConflictError,
    "account_conflict": ConflictError,
    "unavailable": UnavailableError,
    "events_pruned": EventsPrunedError,
}


def api_error(status: int, code: str, message: str, details: Any = None) -> ApiError:
    """The exception for one error answer, of the class that matches its code."""
    return _BY_CODE.get(code, ApiError)(status, code, message, details)


class WaitTimeout(BillingError, TimeoutError):
    """The operation was still pending when `wait` gave up; `operation` is how it stood."""

    def __init__(self, operation: Any, timeout_s: float) -> None:
        super().__init__(f"operation {operation.operation_id} still pending after {timeout_s:g} s")
        self.operation = operation
