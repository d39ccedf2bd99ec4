"""The rules of reversals: which operations may be moved back, how much, and the postings.

A reversal moves the posted money of a succeeded credit, debit, transfer or
capture back the way it came: each posted posting of that operation is
mirrored. A credit's reversal takes the money out of the account again, a
debit's puts it back, a transfer's moves it from the destination to the
source, and a capture's from where the capture sent it (the hold's
destination, or the external counter-account) back to the hold's account as
posted money; the hold itself stays ended. An operation's succeeded
reversals never sum beyond what it moved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from billing.domain import (
    AccountState,
    Decision,
    ErrorCode,
    Failure,
    OperationType,
    Posting,
    Status,
    Success,
    check_funds,
    is_client_account_id,
    not_found,
)

REVERSIBLE_TYPES = frozenset(
    {OperationType.credit, OperationType.debit, OperationType.transfer, OperationType.capture}
)


@dataclass(frozen=True)
class ReversalTarget:
    """The operation a reversal names, as the ledger holds it.

    `postings` are its posted postings (none unless it succeeded: a hold's or
    a release's move held money only); `reversed` is the sum of its
    succeeded reversals so far.
    """

    operation_id: str
    type: OperationType
    status: Status
    postings: tuple[Posting, ...] = ()
    reversed: int = 0

    @property
    def amount(self) -> int:
        """What the operation moved: the sum of its positive posted postings."""
        return sum(p.amount for p in self.postings if p.amount > 0)

    @property
    def reversible(self) -> int:
        """What remains to be reversed of it."""
        return self.amount - self.reversed


def target_account_ids(target: ReversalTarget) -> set[str]:
    """The client accounts a reversal of this operation moves money on, to be locked."""
    return {p.account_id for p in target.postings if is_client_account_id(p.account_id)}


def not_reversible(target: ReversalTarget | None, reverses: str) -> Failure | None:
    """operation_not_reversible unless the operation is a succeeded credit, debit, transfer
    or capture."""
    if target is None:
        message = f"operation {reverses} does not exist"
    elif target.type not in REVERSIBLE_TYPES:
        kind = target.type.value
        article = "an" if kind[0] in "aeiou" else "a"
        message = (
            f"operation {reverses} is {article} {kind}: "
            "only credits, debits, transfers and captures are reversible"
        )
    elif target.status is not Status.succeeded:
        message = (
            f"operation {reverses} is {target.status.value}: "
            "only a succeeded operation is reversible"
        )
    else:
        return None
    return Failure(ErrorCode.operation_not_reversible, message)


def reverse(
    request: dict[str, Any], accounts: dict[str, AccountState], target: ReversalTarget | None
) -> Decision:
    """A reversal of `amount` (default: all that remains reversible) of the target."""
    failure = not_reversible(target, request["reverses"])
    if failure:
        return failure
    assert target is not None
    assert len(target.postings) == 2 and sum(p.amount for p in target.postings) == 0, (
        f"operation {target.operation_id}: not a movement from one account to another"
    )
    reversible = target.reversible
    amount = int(request.get("amount", reversible))
    if amount > reversible or reversible == 0:
        return Failure(
            ErrorCode.amount_exceeds_reversible,
            f"a reversal of {amount or 'the rest'} exceeds the {reversible} that remains "
            f"reversible of operation {target.operation_id} ({target.reversed} of "
            f"{target.amount} reversed)",
        )
    postings = [Posting(p.account_id, -amount if p.amount > 0 else amount) for p in target.postings]
    for posting in postings:
        if not is_client_account_id(posting.account_id):
            continue
        account = accounts.get(posting.account_id)
        if account is None:
            return not_found(posting.account_id)
        if posting.amount < 0:
            failure = check_funds(account, amount)
            if failure:
                return failure
    return Success(postings)


def reversal_amount(postings: list[Posting]) -> int:
    """What a succeeded reversal moved back."""
    return sum(p.amount for p in postings if p.amount > 0)


def reversed_by(target: ReversalTarget, amount: int) -> ReversalTarget:
    """The target once a reversal of `amount` of it succeeded."""
    assert 0 < amount <= target.reversible, f"{target.operation_id}: reversed beyond its amount"
    return replace(target, reversed=target.reversed + amount)
