"""balance_limit_exceeded: no operation takes a client account's posted or held past balance_max."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing import limits
from billing.domain import (
    AccountState,
    Bucket,
    ErrorCode,
    Failure,
    HoldState,
    HoldStatus,
    Operation,
    OperationType,
    Posting,
    Success,
    check_balance_limits,
)
from billing.rules import decide

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
MAX = limits.balance_max


def account(account_id: str, posted: int = 0, held: int = 0, overdraft: int = 0) -> AccountState:
    return AccountState(account_id, "USD", posted, held, overdraft)


def accounts(*states: AccountState) -> dict[str, AccountState]:
    return {state.account_id: state for state in states}


def operation(kind: OperationType, **request: Any) -> Operation:
    return Operation("op", kind, request)


def hold(destination: str | None = None, remaining: int = 10) -> HoldState:
    return HoldState(
        "h", "a", destination, remaining, 0, remaining, HoldStatus.active, NOW + timedelta(hours=1)
    )


def code(decision: Any) -> ErrorCode | None:
    return decision.code if isinstance(decision, Failure) else None


def test_a_credit_up_to_balance_max_succeeds() -> None:
    decision = decide(
        operation(OperationType.credit, account_id="a", amount=5),
        accounts(account("a", MAX - 5)),
        None,
        NOW,
    )
    assert isinstance(decision, Success)


def test_a_credit_past_balance_max_fails_with_balance_limit_exceeded() -> None:
    decision = decide(
        operation(OperationType.credit, account_id="a", amount=6),
        accounts(account("a", MAX - 5)),
        None,
        NOW,
    )
    assert code(decision) is ErrorCode.balance_limit_exceeded
    assert isinstance(decision, Failure) and "a: posted would be" in decision.message


def test_a_transfer_that_would_take_the_destination_past_balance_max_fails() -> None:
    state = accounts(account("a", 100), account("b", MAX))
    request = {"source_account_id": "a", "destination_account_id": "b", "amount": 1}
    assert code(decide(operation(OperationType.transfer, **request), state, None, NOW)) is (
        ErrorCode.balance_limit_exceeded
    )


def test_a_hold_that_would_take_held_past_balance_max_fails() -> None:
    # An overdraft lets held exceed posted, so held can reach the limit first.
    state = accounts(account("a", MAX, held=MAX - 5, overdraft=10**15))
    decision = decide(operation(OperationType.hold, account_id="a", amount=6), state, None, NOW)
    assert code(decision) is ErrorCode.balance_limit_exceeded


def test_a_capture_into_a_destination_past_balance_max_fails() -> None:
    state = accounts(account("a", 100, held=10), account("b", MAX - 9))
    decision = decide(operation(OperationType.capture, hold_id="h"), state, hold("b"), NOW)
    assert code(decision) is ErrorCode.balance_limit_exceeded


def test_a_capture_out_of_the_service_has_no_limit_on_the_external_account() -> None:
    state = accounts(account("a", 100, held=10))
    decision = decide(operation(OperationType.capture, hold_id="h"), state, hold(), NOW)
    assert isinstance(decision, Success)


def test_a_debit_may_bring_back_an_account_an_older_version_left_outside_the_range() -> None:
    state = accounts(account("a", 5 * 10**18))
    decision = decide(operation(OperationType.debit, account_id="a", amount=10), state, None, NOW)
    assert isinstance(decision, Success)


def test_the_negative_side_is_limited_too() -> None:
    state = accounts(account("a", -MAX + 5, overdraft=2 * MAX))
    postings = [Posting("a", -6), Posting("@external:USD", 6)]
    failure = check_balance_limits(state, postings)
    assert failure is not None and failure.code is ErrorCode.balance_limit_exceeded


def test_the_external_counter_accounts_have_no_limit() -> None:
    external = AccountState("@external:USD", "USD", -MAX, 0, 0, is_external=True)
    postings = [Posting("a", 10), Posting("@external:USD", -10)]
    assert check_balance_limits(accounts(account("a"), external), postings) is None


@pytest.mark.parametrize("bucket", [Bucket.posted, Bucket.held])
def test_several_postings_to_one_figure_are_added_up_before_the_check(bucket: Bucket) -> None:
    postings = [Posting("a", MAX, bucket), Posting("a", 1, bucket)]
    failure = check_balance_limits(accounts(account("a")), postings)
    assert failure is not None and failure.code is ErrorCode.balance_limit_exceeded
