"""The service layer: one function per use case, each inside one unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from billing import holds, limits
from billing.domain import (
    AccountState,
    Failure,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    OperationType,
    Status,
    Success,
    apply_postings,
    assert_balanced,
    expiry_operation_id,
)
from billing.holds import hold_account_ids
from billing.ports import Event, EventPublisher, OperationRecord, TransientError, UnitOfWork
from billing.rules import decide, involved_account_ids

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
    record: OperationRecord | None = None


def apply_operation(operation_id: str, uow: UnitOfWork, clock: Clock = utc_now) -> Applied:
    """Apply an accepted operation exactly once, under the locks of its accounts.

    Safe to call any number of times for the same id: the status is checked
    again after the locks are taken, and a terminal operation is left alone.
    """
    for _ in range(limits.lock_set_attempts_max):
        try:
            return _apply_once(operation_id, uow, clock)
        except _LocksChanged:
            continue
    raise TransientError(f"operation {operation_id}: its hold kept changing under the locks")


class _LocksChanged(Exception):
    """The hold appeared between choosing the locks and taking them: choose again."""


def _apply_once(operation_id: str, uow: UnitOfWork, clock: Clock) -> Applied:
    with uow:
        record = uow.get_operation(operation_id)
        if record is None:
            return Applied(operation_id, found=False, newly_applied=False, event_ids=[])
        if record.operation.status is not Status.pending:
            return Applied(operation_id, True, False, uow.unpublished_event_ids([operation_id]))
        hold_id = record.operation.request.get("hold_id")
        # A hold's accounts never change, so reading it before the locks tells
        # which locks to take; it is read again under them, and if it was
        # created in between (its locks were not taken) the choice starts over.
        hold = uow.get_hold(hold_id) if hold_id else None
        account_ids = involved_account_ids(record.operation, hold)
        uow.lock_accounts(account_ids)
        record = uow.get_operation(operation_id, for_update=True)
        assert record is not None, "an operation row vanished under its lock"
        if record.operation.status is not Status.pending:
            return Applied(operation_id, True, False, uow.unpublished_event_ids([operation_id]))
        if hold_id:
            locked = hold
            hold = uow.get_hold(hold_id, for_update=True)
            if locked is None and hold is not None:
                raise _LocksChanged()
        accounts = uow.get_accounts(account_ids)
        completed, _ = _apply(record, accounts, hold, uow, clock())
        uow.add_event(operation_event(completed))
        uow.commit()
    return Applied(operation_id, True, True, [operation_id], completed)


def expire_hold(hold_id: str, uow: UnitOfWork, clock: Clock = utc_now) -> str | None:
    """Expire an active hold whose time has passed; the id of its event, or None.

    Under the same account locks as a capture or release, so a hold that a
    concurrent capture just ended is left alone: it ends in exactly one state.
    """
    with uow:
        hold = uow.get_hold(hold_id)
        if hold is None or hold.status is not HoldStatus.active:
            return None
        uow.lock_accounts(hold_account_ids(hold))
        hold = uow.get_hold(hold_id, for_update=True)
        now = clock()
        if hold is None or holds.expire(hold, now) is None:
            return None
        operation = Operation(
            expiry_operation_id(hold_id), OperationType.expiry, {"hold_id": hold_id}
        )
        record, created = uow.insert_operation(operation)
        assert created, f"hold {hold_id} was expired twice"
        accounts = uow.get_accounts(hold_account_ids(hold))
        _, expired = _apply(record, accounts, hold, uow, now)
        assert expired is not None
        uow.add_event(
            Event(
                message_id=operation.operation_id,
                routing_key="hold.expired",
                body={**render_hold(expired), "schema_version": 1},
            )
        )
        uow.commit()
    return operation.operation_id


def _apply(
    record: OperationRecord,
    accounts: dict[str, AccountState],
    hold: HoldState | None,
    uow: UnitOfWork,
    now: datetime,
) -> tuple[OperationRecord, HoldState | None]:
    """Decide, post, and store the outcome; the completed record and the hold after."""
    operation = record.operation
    decision = decide(operation, accounts, hold, now)
    if isinstance(decision, Failure):
        status, error, balances = Status.failed, (decision.code.value, decision.message), None
    else:
        assert_balanced(decision.postings)
        expected = apply_postings(accounts, decision.postings)
        after = uow.post(operation, decision.postings)
        for account_id, account in after.items():
            assert account == expected[account_id], f"{account_id}: balance drifted from entries"
        if decision.hold is not None:
            uow.save_hold(decision.hold, new=operation.type is OperationType.hold)
        status, error, balances = Status.succeeded, None, _balances(after)
    seq = uow.complete_operation(
        operation.operation_id,
        status=status.value,
        error=error,
        balances=balances,
        completed_at=now,
    )
    completed = replace(
        record,
        operation=replace(operation, status=status),
        error_code=error[0] if error else None,
        error_message=error[1] if error else None,
        balances=balances,
        completed_at=now,
        ledger_seq=seq,
    )
    return completed, decision.hold if isinstance(decision, Success) else None


def render_hold(hold: HoldState) -> dict[str, Any]:
    """The contract's representation of a hold."""
    return {
        "hold_id": hold.hold_id,
        "account_id": hold.account_id,
        "destination_account_id": hold.destination_account_id,
        "amount": hold.amount,
        "captured": hold.captured,
        "remaining": hold.remaining,
        "status": hold.status.value,
        "expires_at": _timestamp(hold.expires_at),
        "created_at": _timestamp(hold.created_at),
    }


def _timestamp(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds") if moment else None


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
    body["accepted_at"] = _timestamp(record.accepted_at)
    body["completed_at"] = _timestamp(record.completed_at)
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


def due_holds(uow: UnitOfWork, *, limit: int) -> list[str]:
    with uow:
        return uow.due_hold_ids(limit=limit)
