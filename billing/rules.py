"""Which accounts an operation touches, and `decide`: the rules of every operation type.

`decide` is pure: from the operation, the accounts (and hold) it touches and
the time, it returns either a Failure with its code or the postings to make.
"""

from __future__ import annotations

from datetime import datetime

from billing import holds, reversals
from billing.domain import (
    AccountState,
    Decision,
    ErrorCode,
    Failure,
    HoldState,
    Operation,
    OperationType,
    Posting,
    Success,
    check_balance_limits,
    check_counterparty,
    check_funds,
    external_account_id,
    not_found,
)
from billing.reversals import ReversalTarget


def involved_account_ids(operation: Operation, hold: HoldState | None) -> list[str]:
    """The client accounts whose balances an operation may change, to be locked.

    A reversal's are those of the operation it reverses, read from the
    ledger (`reversals.target_account_ids`).
    """
    request = operation.request
    if operation.type is OperationType.reversal:
        return []
    if operation.type is OperationType.transfer:
        return [request["source_account_id"], request["destination_account_id"]]
    if operation.type in (OperationType.capture, OperationType.release, OperationType.expiry):
        return holds.hold_account_ids(hold)
    ids = [request["account_id"]]
    if request.get("destination_account_id"):
        ids.append(request["destination_account_id"])
    return ids


def decide(
    operation: Operation,
    accounts: dict[str, AccountState],
    hold: HoldState | None,
    now: datetime,
    target: ReversalTarget | None = None,
) -> Decision:
    """The operation's failure, or the postings it makes; checked last, every balance in range.

    `target` is the operation a reversal reverses, as it stands (None: unknown).
    """
    decision = _decide(operation, accounts, hold, now, target)
    if isinstance(decision, Failure):
        return decision
    return check_balance_limits(accounts, decision.postings) or decision


def _decide(
    operation: Operation,
    accounts: dict[str, AccountState],
    hold: HoldState | None,
    now: datetime,
    target: ReversalTarget | None,
) -> Decision:
    request = operation.request
    operation_type = operation.type
    if operation_type is OperationType.reversal:
        return reversals.reverse(request, accounts, target)
    if operation_type is OperationType.transfer:
        return _transfer(accounts, request)
    if operation_type is OperationType.hold:
        return holds.create(operation, accounts, now)
    if operation_type is OperationType.capture:
        return holds.capture(request, accounts, hold, now)
    if operation_type is OperationType.release:
        return holds.release(hold, now, request["hold_id"])
    if operation_type is OperationType.expiry:
        expired = holds.expire(hold, now) if hold else None
        return expired or Failure(ErrorCode.hold_not_active, "the hold is not due to expire")
    account = accounts.get(request["account_id"])
    if account is None:
        return not_found(request["account_id"])
    amount = int(request["amount"])
    external = external_account_id(account.currency)
    if operation_type is OperationType.credit:
        return Success([Posting(account.account_id, amount), Posting(external, -amount)])
    if operation_type is OperationType.debit:
        return check_funds(account, amount) or Success(
            [Posting(account.account_id, -amount), Posting(external, amount)]
        )
    raise ValueError(f"decide() does not handle {operation_type}")


def _transfer(accounts: dict[str, AccountState], request: dict[str, object]) -> Decision:
    source_id = str(request["source_account_id"])
    destination_id = str(request["destination_account_id"])
    amount = int(str(request["amount"]))
    if source_id == destination_id:
        return Failure(ErrorCode.same_account, "source and destination are the same account")
    source = accounts.get(source_id)
    if source is None:
        return not_found(source_id)
    failure = check_counterparty(source, accounts.get(destination_id), destination_id)
    failure = failure or check_funds(source, amount)
    return failure or Success([Posting(source_id, -amount), Posting(destination_id, amount)])
