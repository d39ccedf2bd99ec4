"""The service layer: one function per use case, each inside one unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from billing import limits
from billing.domain import (
    AccountState,
    Failure,
    NewAccount,
    Operation,
    Status,
    Success,
    apply_postings,
    assert_balanced,
    decide,
    involved_account_ids,
)
from billing.ports import Event, EventPublisher, OperationRecord, UnitOfWork

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Applied:
    """What applying one operation did; `event_ids` are left to publish."""

    operation_id: str
    found: bool
    newly_applied: bool
    event_ids: list[str]


def apply_operation(operation_id: str, uow: UnitOfWork, clock: Clock = utc_now) -> Applied:
    """Apply an accepted operation exactly once, under the locks of its accounts.

    Safe to call any number of times for the same id: the status is checked
    again after the locks are taken, and a terminal operation is left alone.
    """
    with uow:
        record = uow.get_operation(operation_id)
        if record is None:
            return Applied(operation_id, found=False, newly_applied=False, event_ids=[])
        if record.operation.status is not Status.pending:
            return Applied(operation_id, True, False, uow.unpublished_event_ids([operation_id]))
        account_ids = involved_account_ids(record.operation)
        uow.lock_accounts(account_ids)
        record = uow.get_operation(operation_id, for_update=True)
        assert record is not None, "an operation row vanished under its lock"
        if record.operation.status is not Status.pending:
            return Applied(operation_id, True, False, uow.unpublished_event_ids([operation_id]))
        accounts = uow.get_accounts(account_ids)
        completed = _apply(record, accounts, uow, clock())
        uow.add_event(operation_event(completed))
        uow.commit()
    return Applied(operation_id, True, True, [operation_id])


def _apply(
    record: OperationRecord, accounts: dict[str, AccountState], uow: UnitOfWork, now: datetime
) -> OperationRecord:
    operation = record.operation
    decision = decide(operation, accounts)
    if isinstance(decision, Failure):
        status, error, balances = Status.failed, (decision.code.value, decision.message), None
    else:
        assert isinstance(decision, Success)
        assert_balanced(decision.postings)
        expected = apply_postings(accounts, decision.postings)
        after = uow.post(operation, decision.postings)
        for account_id, account in after.items():
            assert account == expected[account_id], f"{account_id}: balance drifted from entries"
        status, error, balances = Status.succeeded, None, _balances(after)
    seq = uow.complete_operation(
        operation.operation_id,
        status=status.value,
        error=error,
        balances=balances,
        completed_at=now,
    )
    return replace(
        record,
        operation=replace(operation, status=status),
        error_code=error[0] if error else None,
        error_message=error[1] if error else None,
        balances=balances,
        completed_at=now,
        ledger_seq=seq,
    )


def _balances(accounts: dict[str, AccountState]) -> dict[str, dict[str, int]]:
    return {
        account_id: {"posted": a.posted, "held": a.held, "available": a.available}
        for account_id, a in sorted(accounts.items())
        if not a.is_external
    }


def render_operation(record: OperationRecord) -> dict[str, Any]:
    """The contract's representation of an operation, for the API and for events."""
    operation = record.operation
    body: dict[str, Any] = {
        "operation_id": operation.operation_id,
        "type": operation.type.value,
        "status": operation.status.value,
        "request": operation.request,
        "error": (
            {"code": record.error_code, "message": record.error_message}
            if record.error_code
            else None
        ),
    }
    if record.balances is not None:
        body["balances"] = record.balances
    body["accepted_at"] = record.accepted_at.isoformat(timespec="microseconds")
    body["completed_at"] = (
        record.completed_at.isoformat(timespec="microseconds") if record.completed_at else None
    )
    return body


def operation_event(record: OperationRecord) -> Event:
    operation = record.operation
    return Event(
        message_id=operation.operation_id,
        routing_key=f"operation.{operation.type.value}.{operation.status.value}",
        body={**render_operation(record), "schema_version": 1},
    )


class Acceptance(StrEnum):
    accepted = "accepted"  # new: answer 202 and enqueue
    repeated = "repeated"  # the same request again: answer 200 with its state
    conflict = "conflict"  # the same id with another body: answer 409


def accept_operation(operation: Operation, uow: UnitOfWork) -> tuple[Acceptance, OperationRecord]:
    """Record an operation as pending, or recognise a retry of one already recorded."""
    with uow:
        record, created = uow.insert_operation(operation)
        uow.commit()
    if created:
        return Acceptance.accepted, record
    same = record.operation.type is operation.type and record.operation.request == operation.request
    return (Acceptance.repeated if same else Acceptance.conflict), record


def open_account(account: NewAccount, uow: UnitOfWork) -> tuple[Acceptance, dict[str, Any]]:
    """Create an account; a repeat with the same currency and limit is not an error."""
    with uow:
        row, created = uow.create_account(account)
        uow.commit()
    if created:
        return Acceptance.accepted, row
    same = row["currency"] == account.currency and row["overdraft_limit"] == account.overdraft_limit
    return (Acceptance.repeated if same else Acceptance.conflict), row


def publish_events(
    message_ids: list[str] | None,
    uow: UnitOfWork,
    publisher: EventPublisher,
    *,
    older_than_s: float = 0,
    limit: int = limits.outbox_publish_batch_max,
) -> int:
    """Publish recorded events that are still unpublished; return how many.

    The rows stay locked while publishing, so two publishers never race on one
    event; a crash after the publish and before the commit publishes it again,
    which the contract allows (at least once, every copy the same).
    """
    with uow:
        events = uow.claim_unpublished_events(message_ids, older_than_s=older_than_s, limit=limit)
        if not events:
            return 0
        publisher.publish(events)
        uow.mark_events_published([e.message_id for e in events])
        uow.commit()
    return len(events)


def stuck_operations(uow: UnitOfWork, *, older_than_s: float, limit: int) -> list[str]:
    """Accepted operations that stayed pending too long, to be enqueued again."""
    with uow:
        operation_ids = uow.pending_operations(older_than_s=older_than_s, limit=limit)
        uow.commit()
    return operation_ids
