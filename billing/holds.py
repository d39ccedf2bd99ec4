"""The rules of holds: create, capture (in part or in full), release and expiry.

A hold moves money from an account's available figure into its held figure
(a `held` posting) without touching posted money; a capture takes posted
money out (to the destination of a two-phase transfer, or out of the service)
and ends or shrinks the hold; a release or an expiry gives the rest back.
A hold ends in exactly one of captured, released, expired.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from billing.domain import (
    AccountState,
    Bucket,
    Decision,
    ErrorCode,
    Failure,
    HoldState,
    HoldStatus,
    Operation,
    Posting,
    Success,
    check_counterparty,
    check_funds,
    external_account_id,
    not_found,
)


def hold_account_ids(hold: HoldState | None) -> list[str]:
    if hold is None:
        return []
    ids = [hold.account_id]
    if hold.destination_account_id:
        ids.append(hold.destination_account_id)
    return ids


def create(operation: Operation, accounts: dict[str, AccountState], now: datetime) -> Decision:
    request = operation.request
    account = accounts.get(request["account_id"])
    if account is None:
        return not_found(request["account_id"])
    destination_id = request.get("destination_account_id")
    if destination_id is not None:
        failure = check_counterparty(account, accounts.get(destination_id), destination_id)
        if failure:
            return failure
    amount = int(request["amount"])
    failure = check_funds(account, amount)
    if failure:
        return failure
    expires_in_s = request.get("expires_in")
    hold = HoldState(
        hold_id=operation.operation_id,
        account_id=account.account_id,
        destination_account_id=destination_id,
        amount=amount,
        captured=0,
        remaining=amount,
        status=HoldStatus.active,
        expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s else None,
        created_at=now,
    )
    return Success([Posting(account.account_id, amount, Bucket.held)], hold)


def _check_active(hold: HoldState | None, now: datetime, hold_id: str) -> Failure | None:
    if hold is None:
        return Failure(ErrorCode.hold_not_found, f"hold {hold_id} does not exist")
    if hold.status is HoldStatus.expired or (
        hold.status is HoldStatus.active and hold.expired_at(now)
    ):
        return Failure(ErrorCode.hold_expired, f"hold {hold_id} expired at {hold.expires_at}")
    if hold.status is not HoldStatus.active:
        return Failure(ErrorCode.hold_not_active, f"hold {hold_id} is already {hold.status}")
    return None


def capture(
    request: dict[str, Any],
    accounts: dict[str, AccountState],
    hold: HoldState | None,
    now: datetime,
) -> Decision:
    failure = _check_active(hold, now, request["hold_id"])
    if failure:
        return failure
    assert hold is not None
    amount = request.get("amount", hold.remaining)
    if amount > hold.remaining:
        return Failure(
            ErrorCode.amount_exceeds_hold,
            f"capture of {amount} exceeds the {hold.remaining} remaining on hold {hold.hold_id}",
        )
    final = request.get("final", True)
    unheld = hold.remaining if final else amount
    account = accounts[hold.account_id]
    receiver = hold.destination_account_id or external_account_id(account.currency)
    if hold.destination_account_id and hold.destination_account_id not in accounts:
        return not_found(hold.destination_account_id)
    remaining = hold.remaining - unheld
    changed = replace(
        hold,
        captured=hold.captured + amount,
        remaining=remaining,
        status=HoldStatus.active if remaining > 0 else HoldStatus.captured,
    )
    return Success(
        [
            Posting(hold.account_id, -unheld, Bucket.held),
            Posting(hold.account_id, -amount),
            Posting(receiver, amount),
        ],
        changed,
    )


def release(hold: HoldState | None, now: datetime, hold_id: str) -> Decision:
    failure = _check_active(hold, now, hold_id)
    if failure:
        return failure
    assert hold is not None
    return _end(hold, HoldStatus.released)


def expire(hold: HoldState, now: datetime) -> Decision | None:
    """The expiry of an active hold whose time has come; None when there is nothing to do."""
    if hold.status is not HoldStatus.active or not hold.expired_at(now):
        return None
    return _end(hold, HoldStatus.expired)


def _end(hold: HoldState, status: HoldStatus) -> Success:
    return Success(
        [Posting(hold.account_id, -hold.remaining, Bucket.held)],
        replace(hold, remaining=0, status=status),
    )
