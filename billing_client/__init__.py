"""A Python client of the billing service: its HTTP API and its events.

It imports nothing of the service itself, only the public interfaces (the
HTTP API and the AMQP events of the contract), so it can be installed and
used by any other service. See docs/client.md.
"""

from billing_client.client import Client, new_operation_id
from billing_client.errors import (
    ApiError,
    BillingError,
    ConflictError,
    EventsPrunedError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
    WaitTimeout,
)
from billing_client.events import EventConsumer
from billing_client.models import (
    Account,
    Balance,
    BalanceAt,
    BatchItem,
    Entry,
    ErrorCode,
    Event,
    FeedEvent,
    Hold,
    HoldExpired,
    HoldStatus,
    Operation,
    OperationError,
    OperationEvent,
    RequestRejected,
    Status,
    UnknownEvent,
)

__all__ = [
    "Account",
    "ApiError",
    "Balance",
    "BalanceAt",
    "BatchItem",
    "BillingError",
    "Client",
    "ConflictError",
    "Entry",
    "ErrorCode",
    "Event",
    "EventConsumer",
    "EventsPrunedError",
    "FeedEvent",
    "Hold",
    "HoldExpired",
    "HoldStatus",
    "NotFoundError",
    "Operation",
    "OperationError",
    "OperationEvent",
    "RequestRejected",
    "Status",
    "UnauthorizedError",
    "UnavailableError",
    "UnknownEvent",
    "ValidationError",
    "WaitTimeout",
    "new_operation_id",
]
