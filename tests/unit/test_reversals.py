"""The rules of reversals as pure functions, no I/O: `decide` on a reversal, and a batch of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import limits
from billing.batch import BatchApplier
from billing.domain import (
    AccountState,
    Bucket,
    ErrorCode,
    Failure,
    Operation,
    OperationType,
    Posting,
    Status,
    Success,
    external_account_id,
)
from billing.ports import OperationRecord
from billing.reversals import REVERSIBLE_TYPES, ReversalTarget, target_account_ids
from billing.rules import decide, involved_account_ids

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EXTERNAL = external_account_id("USD")


def account(account_id: str, posted: int = 0, *, overdraft_limit: int = 0) -> AccountState:
    return AccountState(account_id, "USD", posted, 0, overdraft_limit)


def accounts(*states: AccountState) -> dict[str, AccountState]:
    return {state.account_id: state for state in states}


def moved(kind: OperationType, source: str, destination: str, amount: int) -> ReversalTarget:
    """A succeeded operation that moved `amount` from `source` to `destination`."""
    postings = (Posting(source, -amount), Posting(destination, amount))
    return ReversalTarget("t", kind, Status.succeeded, postings)


CREDIT = moved(OperationType.credit, EXTERNAL, "alice", 500)
DEBIT = moved(OperationType.debit, "alice", EXTERNAL, 500)
TRANSFER = moved(OperationType.transfer, "alice", "bob", 500)
# A capture of a hold on alice, to bob (a two-phase transfer) or out of the service.
CAPTURE_TO_BOB = moved(OperationType.capture, "alice", "bob", 500)
CAPTURE_OUT = moved(OperationType.capture, "alice", EXTERNAL, 500)


def reversal(amount: int | None = None, reverses: str = "t") -> Operation:
    request: dict[str, Any] = {"reverses": reverses}
    if amount is not None:
        request["amount"] = amount
    return Operation("r", OperationType.reversal, request)


def reverse(
    target: ReversalTarget | None, state: dict[str, AccountState], amount: int | None = None
) -> Any:
    return decide(reversal(amount), state, None, NOW, target)


def test_a_credits_reversal_takes_the_money_out_of_the_account_again() -> None:
    decision = reverse(CREDIT, accounts(account("alice", 500)))
    assert decision == Success([Posting(EXTERNAL, 500), Posting("alice", -500)])


def test_a_debits_reversal_puts_the_money_back_on_the_account() -> None:
    decision = reverse(DEBIT, accounts(account("alice", 0)))
    assert decision == Success([Posting("alice", 500), Posting(EXTERNAL, -500)])


def test_a_transfers_reversal_moves_the_money_from_the_destination_to_the_source() -> None:
    decision = reverse(TRANSFER, accounts(account("alice"), account("bob", 500)), 200)
    assert decision == Success([Posting("alice", 200), Posting("bob", -200)])


def test_a_captures_reversal_moves_the_money_back_from_the_destination_as_posted_money() -> None:
    decision = reverse(CAPTURE_TO_BOB, accounts(account("alice"), account("bob", 500)))
    assert decision == Success([Posting("alice", 500), Posting("bob", -500)])
    assert all(p.bucket is Bucket.posted for p in decision.postings)


def test_a_captures_reversal_without_destination_takes_it_from_the_external_account() -> None:
    decision = reverse(CAPTURE_OUT, accounts(account("alice")))
    assert decision == Success([Posting("alice", 500), Posting(EXTERNAL, -500)])


def test_without_an_amount_a_reversal_takes_all_that_remains_reversible() -> None:
    partly = ReversalTarget("t", OperationType.debit, Status.succeeded, DEBIT.postings, 300)
    decision = reverse(partly, accounts(account("alice")))
    assert decision == Success([Posting("alice", 200), Posting(EXTERNAL, -200)])


def test_a_reversal_of_exactly_what_remains_succeeds_and_one_more_fails() -> None:
    partly = ReversalTarget("t", OperationType.debit, Status.succeeded, DEBIT.postings, 300)
    assert isinstance(reverse(partly, accounts(account("alice")), 200), Success)
    failure = reverse(partly, accounts(account("alice")), 201)
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.amount_exceeds_reversible
    assert "200" in failure.message and "300 of 500" in failure.message


def test_a_reversal_of_an_operation_reversed_in_full_fails_with_amount_exceeds_reversible() -> None:
    done = ReversalTarget("t", OperationType.debit, Status.succeeded, DEBIT.postings, 500)
    for amount in (None, 1):
        failure = reverse(done, accounts(account("alice")), amount)
        assert isinstance(failure, Failure)
        assert failure.code is ErrorCode.amount_exceeds_reversible


_ONLY_THESE = "only credits, debits, transfers and captures are reversible"
_ONLY_SUCCEEDED = "only a succeeded operation is reversible"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (None, "operation t does not exist"),
        (
            ReversalTarget("t", OperationType.credit, Status.pending),
            f"operation t is pending: {_ONLY_SUCCEEDED}",
        ),
        (
            ReversalTarget("t", OperationType.transfer, Status.failed),
            f"operation t is failed: {_ONLY_SUCCEEDED}",
        ),
        (
            ReversalTarget("t", OperationType.hold, Status.succeeded),
            f"operation t is a hold: {_ONLY_THESE}",
        ),
        (
            ReversalTarget("t", OperationType.release, Status.succeeded),
            f"operation t is a release: {_ONLY_THESE}",
        ),
        (
            ReversalTarget("t", OperationType.expiry, Status.succeeded),
            f"operation t is an expiry: {_ONLY_THESE}",
        ),
        (
            ReversalTarget("t", OperationType.reversal, Status.succeeded, CREDIT.postings),
            f"operation t is a reversal: {_ONLY_THESE}",
        ),
    ],
)
def test_only_a_succeeded_credit_debit_transfer_or_capture_is_reversible(
    target: ReversalTarget | None, message: str
) -> None:
    """The whole message, which reads as one sentence."""
    failure = reverse(target, accounts(account("alice", 1_000), account("bob", 1_000)))
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.operation_not_reversible
    assert failure.message == message


def test_the_reversible_types_are_the_four_that_move_posted_money_from_a_request() -> None:
    assert {t.value for t in REVERSIBLE_TYPES} == {"credit", "debit", "transfer", "capture"}


def test_a_credits_reversal_from_an_account_that_spent_it_fails_with_insufficient_funds() -> None:
    failure = reverse(CREDIT, accounts(account("alice", 499)))
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.insufficient_funds


def test_a_credits_reversal_may_use_the_accounts_overdraft() -> None:
    decision = reverse(CREDIT, accounts(account("alice", 100, overdraft_limit=400)))
    assert isinstance(decision, Success)


def test_a_transfers_reversal_when_the_destination_spent_it_fails_with_insufficient_funds() -> None:
    failure = reverse(TRANSFER, accounts(account("alice"), account("bob", 10)), 11)
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.insufficient_funds
    assert failure.message.startswith("bob ")


def test_a_reversal_that_would_take_a_balance_past_the_limit_fails() -> None:
    failure = reverse(DEBIT, accounts(account("alice", limits.balance_max)), 1)
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.balance_limit_exceeded


def test_the_not_reversible_check_comes_before_the_amount_and_the_funds() -> None:
    failed = ReversalTarget("t", OperationType.credit, Status.failed)
    failure = reverse(failed, {}, 10**15)
    assert isinstance(failure, Failure)
    assert failure.code is ErrorCode.operation_not_reversible


def test_a_reversal_locks_the_client_accounts_of_what_it_reverses_only() -> None:
    assert involved_account_ids(reversal(), None) == []
    assert target_account_ids(CREDIT) == {"alice"}
    assert target_account_ids(TRANSFER) == {"alice", "bob"}
    assert target_account_ids(ReversalTarget("t", OperationType.credit, Status.pending)) == set()


@given(
    amount=st.integers(1, 10_000),
    reversed_sum=st.integers(0, 10_000),
    asked=st.one_of(st.none(), st.integers(1, 20_000)),
)
def test_a_reversal_succeeds_exactly_when_it_fits_what_remains_and_mirrors_the_operation(
    amount: int, reversed_sum: int, asked: int | None
) -> None:
    reversed_sum = min(reversed_sum, amount)
    target = ReversalTarget(
        "t",
        OperationType.transfer,
        Status.succeeded,
        (Posting("alice", -amount), Posting("bob", amount)),
        reversed_sum,
    )
    decision = reverse(target, accounts(account("alice"), account("bob", amount)), asked)
    remaining = amount - reversed_sum
    taken = remaining if asked is None else asked
    if 0 < taken <= remaining:
        assert decision == Success([Posting("alice", taken), Posting("bob", -taken)])
    else:
        assert isinstance(decision, Failure)
        assert decision.code is ErrorCode.amount_exceeds_reversible


# -- in a batch ---------------------------------------------------------------------------


def record(operation_id: str, kind: OperationType, **request: Any) -> OperationRecord:
    return OperationRecord(Operation(operation_id, kind, request), None, None, None, NOW, None)


def test_a_reversal_after_its_operation_in_the_same_batch_sees_it_succeeded() -> None:
    applier = BatchApplier(
        accounts(account("alice", 0)),
        {},
        NOW,
        {"c": ReversalTarget("c", OperationType.credit, Status.pending)},
    )
    applier.apply(record("c", OperationType.credit, account_id="alice", amount=300), 1)
    done = applier.apply(record("r1", OperationType.reversal, reverses="c", amount=100), 2)
    rest = applier.apply(record("r2", OperationType.reversal, reverses="c"), 3)
    over = applier.apply(record("r3", OperationType.reversal, reverses="c", amount=1), 4)

    assert (done.operation.status, rest.operation.status) == (Status.succeeded, Status.succeeded)
    assert over.error_code == "amount_exceeds_reversible"
    assert applier.reversals == {"c": [("r1", 100), ("r2", 200)]}
    assert applier.accounts["alice"].posted == 0
    assert [
        (e.operation_id, e.type, e.amount) for e in applier.entries if e.account_id == "alice"
    ] == [
        ("c", "credit", 300),
        ("r1", "reversal", -100),
        ("r2", "reversal", -200),
    ]


def test_a_reversal_of_an_operation_that_failed_earlier_in_the_batch_is_not_reversible() -> None:
    applier = BatchApplier(
        accounts(account("alice", 0)),
        {},
        NOW,
        {"d": ReversalTarget("d", OperationType.debit, Status.pending)},
    )
    failed = applier.apply(record("d", OperationType.debit, account_id="alice", amount=300), 1)
    reversal_record = applier.apply(record("r", OperationType.reversal, reverses="d"), 2)
    assert failed.error_code == "insufficient_funds"
    assert reversal_record.error_code == "operation_not_reversible"
    assert applier.reversals == {}


def test_a_reversal_whose_operation_is_pending_elsewhere_is_not_reversible() -> None:
    applier = BatchApplier(
        accounts(account("alice", 500)),
        {},
        NOW,
        {"c": ReversalTarget("c", OperationType.credit, Status.pending)},
    )
    outcome = applier.apply(record("r", OperationType.reversal, reverses="c"), 1)
    assert outcome.error_code == "operation_not_reversible"
    assert "is pending" in (outcome.error_message or "")
