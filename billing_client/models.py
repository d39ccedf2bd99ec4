"""What the service returns, as typed values: accounts, entries, holds, operations, events.

Each type reads the fields of the contract and ignores any others, so a
newer service that adds fields does not break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class ErrorCode(StrEnum):
    """Why an accepted operation failed: the contract's codes (a string compares equal)."""

    account_not_found = "account_not_found"
    currency_mismatch = "currency_mismatch"
    insufficient_funds = "insufficient_funds"
    same_account = "same_account"
    hold_not_found = "hold_not_found"
    hold_not_active = "hold_not_active"
    hold_expired = "hold_expired"
    amount_exceeds_hold = "amount_exceeds_hold"
    balance_limit_exceeded = "balance_limit_exceeded"
    operation_not_reversible = "operation_not_reversible"
    amount_exceeds_reversible = "amount_exceeds_reversible"
    internal_error = "internal_error"


class HoldStatus(StrEnum):
    active = "active"
    captured = "captured"
    released = "released"
    expired = "expired"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Balance:
    posted: int
    held: int
    available: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Balance:
        return cls(body["posted"], body["held"], body["available"])


@dataclass(frozen=True)
class BalanceAt:
    """An account's balances as they stood at `at` (after every entry at or before it)."""

    account_id: str
    posted: int
    held: int
    available: int
    at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BalanceAt:
        return cls(
            account_id=body["account_id"],
            posted=body["posted"],
            held=body["held"],
            available=body["available"],
            at=_required_time(body["at"]),
        )


@dataclass(frozen=True)
class Account:
    account_id: str
    currency: str
    posted: int
    held: int
    available: int
    overdraft_limit: int
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Account:
        return cls(
            account_id=body["account_id"],
            currency=body["currency"],
            posted=body["posted"],
            held=body["held"],
            available=body["available"],
            overdraft_limit=body["overdraft_limit"],
            metadata=body.get("metadata") or {},
            created_at=_required_time(body["created_at"]),
        )


@dataclass(frozen=True)
class Entry:
    """One ledger entry of an account; `amount` is signed."""

    entry_id: int
    operation_id: str
    type: str
    amount: int
    posted_after: int | None
    created_at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Entry:
        return cls(
            entry_id=body["entry_id"],
            operation_id=body["operation_id"],
            type=body["type"],
            amount=body["amount"],
            posted_after=body.get("posted_after"),
            created_at=_required_time(body["created_at"]),
        )


@dataclass(frozen=True)
class Hold:
    hold_id: str
    account_id: str
    destination_account_id: str | None
    amount: int
    captured: int
    remaining: int
    status: HoldStatus
    expires_at: datetime | None
    created_at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Hold:
        return cls(
            hold_id=body["hold_id"],
            account_id=body["account_id"],
            destination_account_id=body.get("destination_account_id"),
            amount=body["amount"],
            captured=body["captured"],
            remaining=body["remaining"],
            status=HoldStatus(body["status"]),
            expires_at=_time(body.get("expires_at")),
            created_at=_required_time(body["created_at"]),
        )


@dataclass(frozen=True)
class OperationError:
    """Why an operation failed; `code` is an ErrorCode (or the plain string of a newer code)."""

    code: str
    message: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> OperationError:
        code = body["code"]
        return cls(ErrorCode(code) if code in ErrorCode.__members__ else code, body["message"])


@dataclass(frozen=True)
class Operation:
    """An operation as it stands: pending, or its terminal outcome (which never changes).

    `metadata` is as given with it (`{}` without). `reversed` (the sum of its
    succeeded reversals) and `reversals` (their ids, oldest first) are set for
    the types that can be reversed (credit, debit, transfer, capture) and
    None for the others; in an event they are as the operation completed.
    """

    operation_id: str
    type: str
    status: Status
    request: dict[str, Any]
    error: OperationError | None
    balances: dict[str, Balance]
    accepted_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]
    reversed: int | None
    reversals: list[str] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.status is Status.succeeded

    @property
    def failed(self) -> bool:
        return self.status is Status.failed

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Operation:
        error = body.get("error")
        return cls(
            operation_id=body["operation_id"],
            type=body["type"],
            status=Status(body["status"]),
            request=body.get("request") or {},
            error=OperationError.from_json(error) if error else None,
            balances={k: Balance.from_json(v) for k, v in (body.get("balances") or {}).items()},
            accepted_at=_required_time(body["accepted_at"]),
            completed_at=_time(body.get("completed_at")),
            metadata=body.get("metadata") or {},
            reversed=body.get("reversed"),
            reversals=list(reversals) if (reversals := body.get("reversals")) is not None else None,
            raw=body,
        )


@dataclass(frozen=True)
class BatchItem:
    """One operation of a batch: `result` is accepted, repeated, idempotency_conflict or
    validation_error; `operation` is set for the first two, `error` for the others."""

    operation_id: str | None
    result: str
    operation: Operation | None
    error: dict[str, Any] | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchItem:
        operation = body.get("operation")
        return cls(
            operation_id=body.get("operation_id"),
            result=body["result"],
            operation=Operation.from_json(operation) if operation else None,
            error=body.get("error"),
        )


@dataclass(frozen=True)
class OperationEvent:
    """An operation reached a terminal status (routing key `operation.<type>.<status>`)."""

    routing_key: str
    message_id: str | None
    redelivered: bool
    event_seq: int | None
    operation: Operation


@dataclass(frozen=True)
class HoldExpired:
    """A hold expired and its money was released (routing key `hold.expired`)."""

    routing_key: str
    message_id: str | None
    redelivered: bool
    event_seq: int | None
    hold: Hold


@dataclass(frozen=True)
class RequestRejected:
    """A message on `billing.requests` failed validation (routing key `request.rejected`)."""

    routing_key: str
    message_id: str | None
    redelivered: bool
    event_seq: int | None
    error: dict[str, Any]
    message: Any


@dataclass(frozen=True)
class UnknownEvent:
    """An event this client does not know (a newer service), or a body it could not read."""

    routing_key: str
    message_id: str | None
    redelivered: bool
    event_seq: int | None
    body: Any


Event = OperationEvent | HoldExpired | RequestRejected | UnknownEvent


def event_from_message(
    routing_key: str, message_id: str | None, redelivered: bool, body: Any
) -> Event:
    """The typed event of one message of `billing.events`.

    `event_seq` is the event's number in the feed (`GET /v1/events`), from its
    body; None for an event that has none (`request.rejected` is not in the feed).
    """
    event_seq = body.get("event_seq") if isinstance(body, dict) else None
    if not isinstance(event_seq, int) or isinstance(event_seq, bool):
        event_seq = None
    head = (routing_key, message_id, redelivered, event_seq)
    try:
        if routing_key.startswith("operation."):
            return OperationEvent(*head, Operation.from_json(body))
        if routing_key == "hold.expired":
            return HoldExpired(*head, Hold.from_json(body))
        if routing_key == "request.rejected":
            return RequestRejected(*head, body["error"], body.get("message"))
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # not the shape this client knows: handed over as it is
    return UnknownEvent(*head, body)


@dataclass(frozen=True)
class FeedEvent:
    """One event of the feed (`GET /v1/events`), numbered by `event_seq` in the feed's order.

    `body` is as published to `billing.events` (it carries `event_seq` too);
    `event` is the same typed event an EventConsumer hands over.
    """

    event_seq: int
    routing_key: str
    message_id: str
    body: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FeedEvent:
        return cls(body["event_seq"], body["routing_key"], body["message_id"], body["body"])

    @property
    def event(self) -> Event:
        return event_from_message(self.routing_key, self.message_id, False, self.body)
