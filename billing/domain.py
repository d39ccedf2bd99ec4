"""The rules of money: operations, balances and the postings an operation makes.

Plain Python only: the values every rule works on, and the checks and
postings they share. The rules themselves (`billing.rules.decide`, with
`billing.holds`) are pure functions of these values, so every rule can be
tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from billing import limits


class OperationType(StrEnum):
    credit = "credit"
    debit = "debit"
    transfer = "transfer"
    hold = "hold"
    capture = "capture"
    release = "release"
    expiry = "expiry"  # recorded by the service itself when a hold expires
    reversal = "reversal"


class Status(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class ErrorCode(StrEnum):
    """The closed set of reasons an accepted operation may fail."""

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
    # Not a rule of money: the service could not apply the operation (a
    # request that breaks the rules, a defect, data it cannot store).
    internal_error = "internal_error"


class Bucket(StrEnum):
    """Which figure of an account a posting moves."""

    posted = "posted"
    held = "held"


def external_account_id(currency: str) -> str:
    """The counter-account money enters from and leaves to, one per currency.

    `@` is not allowed in client account ids, so this id can never collide.
    """
    return f"@external:{currency}"


@dataclass(frozen=True)
class AccountState:
    account_id: str
    currency: str
    posted: int
    held: int
    overdraft_limit: int
    is_external: bool = False
    # The time of the account's newest entry (None before its first): the ledger's time
    # never goes back along an account's entries (`BatchApplier`).
    last_entry_at: datetime | None = None

    @property
    def available(self) -> int:
        return self.posted - self.held

    @property
    def floor(self) -> int:
        return -self.overdraft_limit


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    currency: str
    overdraft_limit: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    type: OperationType
    request: dict[str, Any]
    status: Status = Status.pending


class HoldStatus(StrEnum):
    active = "active"
    captured = "captured"
    released = "released"
    expired = "expired"


@dataclass(frozen=True)
class HoldState:
    hold_id: str
    account_id: str
    destination_account_id: str | None
    amount: int
    captured: int
    remaining: int
    status: HoldStatus
    expires_at: datetime | None
    created_at: datetime | None = None

    def expired_at(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def is_client_account_id(account_id: str) -> bool:
    """Whether an account id is a client's: the service's own ids start with `@`."""
    return not account_id.startswith("@")


def expiry_operation_id(hold_id: str) -> str:
    """The id of the operation that records a hold's expiry; `@` keeps it out of client ids."""
    return f"@expiry:{hold_id}"


@dataclass(frozen=True)
class Posting:
    account_id: str
    amount: int
    bucket: Bucket = Bucket.posted


class Entry(NamedTuple):
    """One ledger entry; a named tuple, as a batch builds a thousand of them under the locks."""

    operation_id: str
    account_id: str
    type: str
    bucket: str
    amount: int
    posted_after: int | None
    held_after: int | None


@dataclass(frozen=True)
class Failure:
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Success:
    postings: list[Posting] = field(default_factory=list)
    hold: HoldState | None = None


Decision = Success | Failure


def not_found(account_id: str) -> Failure:
    return Failure(ErrorCode.account_not_found, f"account {account_id} does not exist")


def check_funds(account: AccountState, amount: int) -> Failure | None:
    """insufficient_funds when taking `amount` would put available below the floor."""
    if account.available - amount < account.floor:
        return Failure(
            ErrorCode.insufficient_funds,
            f"{account.account_id} has {account.available} available "
            f"(overdraft limit {account.overdraft_limit}), {amount} needed",
        )
    return None


def check_counterparty(
    account: AccountState, other: AccountState | None, other_id: str
) -> Failure | None:
    """The checks on the second account of a transfer or a two-phase hold."""
    if other_id == account.account_id:
        return Failure(ErrorCode.same_account, "source and destination are the same account")
    if other is None:
        return not_found(other_id)
    if other.currency != account.currency:
        return Failure(
            ErrorCode.currency_mismatch,
            f"{account.account_id} holds {account.currency} but {other_id} holds {other.currency}",
        )
    return None


def check_balance_limits(
    accounts: dict[str, AccountState], postings: list[Posting]
) -> Failure | None:
    """balance_limit_exceeded when the postings take a client account's posted or held
    outside -balance_max..balance_max.

    Only a figure that ends outside and further from zero than it was fails:
    an account left outside by an older version may still come back. The
    external counter-accounts (never among `accounts`) have no limit.
    """
    figures: dict[tuple[str, Bucket], tuple[int, int]] = {}
    for posting in postings:
        account = accounts.get(posting.account_id)
        if account is None or account.is_external:
            continue
        key = (posting.account_id, posting.bucket)
        before, after = figures.get(key) or (
            (account.posted, account.posted)
            if posting.bucket is Bucket.posted
            else (account.held, account.held)
        )
        figures[key] = (before, after + posting.amount)
    for (account_id, bucket), (before, after) in figures.items():
        if abs(after) > limits.balance_max and abs(after) > abs(before):
            return Failure(
                ErrorCode.balance_limit_exceeded,
                f"{account_id}: {bucket} would be {after}, "
                f"outside -{limits.balance_max}..{limits.balance_max}",
            )
    return None


def apply_postings(
    accounts: dict[str, AccountState], postings: list[Posting]
) -> dict[str, AccountState]:
    """The client accounts the postings touch, as they stand after them, with the floor asserted.

    Only the touched accounts are returned (and checked): a batch keeps
    hundreds of accounts and applies its operations one by one, so the cost
    of one operation must not grow with the size of its batch.
    """
    changed: dict[str, AccountState] = {}
    debited: set[str] = set()
    for posting in postings:
        account = changed.get(posting.account_id) or accounts.get(posting.account_id)
        if account is None:
            continue
        posted, held = account.posted, account.held
        if posting.bucket is Bucket.posted:
            posted += posting.amount
        else:
            held += posting.amount
        account = AccountState(
            account.account_id,
            account.currency,
            posted,
            held,
            account.overdraft_limit,
            account.is_external,
        )
        changed[posting.account_id] = account
        if posting.amount < 0:
            debited.add(posting.account_id)
    for account in changed.values():
        assert account.held >= 0, f"{account.account_id}: held below zero"
        if account.account_id in debited:
            assert account.available >= account.floor, f"{account.account_id}: below its floor"
    return changed


def assert_balanced(postings: list[Posting]) -> None:
    """Posted money is double-entry: every operation's posted amounts sum to zero."""
    total = sum(p.amount for p in postings if p.bucket is Bucket.posted)
    assert total == 0, f"postings do not balance: {postings}"
