"""The rules of money as pure functions, no I/O: `decide`, `apply_postings`, `assert_balanced`.

Credits, debits and transfers only; holds have tests of their own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import limits
from billing.domain import (
    AccountState,
    Bucket,
    ErrorCode,
    Failure,
    Operation,
    OperationType,
    Posting,
    Success,
    apply_postings,
    assert_balanced,
    external_account_id,
)
from billing.rules import decide as decide_at
from billing.rules import involved_account_ids

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def decide(operation: Operation, state: dict[str, AccountState]) -> Any:
    """`decide` for an operation that involves no hold, at a fixed time."""
    return decide_at(operation, state, None, NOW)


def account(
    account_id: str,
    posted: int = 0,
    *,
    held: int = 0,
    overdraft_limit: int = 0,
    currency: str = "USD",
) -> AccountState:
    return AccountState(account_id, currency, posted, held, overdraft_limit)


def accounts(*states: AccountState) -> dict[str, AccountState]:
    return {state.account_id: state for state in states}


def credit(account_id: str, amount: int) -> Operation:
    return Operation("op", OperationType.credit, {"account_id": account_id, "amount": amount})


def debit(account_id: str, amount: int) -> Operation:
    return Operation("op", OperationType.debit, {"account_id": account_id, "amount": amount})


def transfer(source: str, destination: str, amount: int) -> Operation:
    request = {
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
    }
    return Operation("op", OperationType.transfer, request)


def postings_of(decision: Any) -> list[Posting]:
    assert isinstance(decision, Success), decision
    return decision.postings


def failure_code(decision: Any) -> ErrorCode:
    assert isinstance(decision, Failure), decision
    assert decision.message
    return decision.code


# --- balances ---------------------------------------------------------------


def test_available_is_posted_minus_held() -> None:
    assert account("a", 100, held=30).available == 70


def test_floor_is_minus_the_overdraft_limit() -> None:
    assert account("a", overdraft_limit=500).floor == -500
    assert account("a").floor == 0


def test_external_account_id_can_never_be_a_client_account_id() -> None:
    external = external_account_id("USD")
    assert external == "@external:USD"
    assert not re.match(limits.identifier_pattern, external)


# --- credits ----------------------------------------------------------------


def test_credit_posts_the_amount_to_the_account_against_the_external_account() -> None:
    decision = decide(credit("a", 100), accounts(account("a")))
    assert postings_of(decision) == [Posting("a", 100), Posting("@external:USD", -100)]


def test_credit_moves_money_against_the_external_account_of_the_account_currency() -> None:
    decision = decide(credit("a", 5), accounts(account("a", currency="EUR")))
    assert Posting("@external:EUR", -5) in postings_of(decision)


def test_credit_to_an_account_at_its_overdraft_floor_succeeds() -> None:
    decision = decide(credit("a", 1), accounts(account("a", -500, overdraft_limit=500)))
    assert postings_of(decision)[0] == Posting("a", 1)


def test_credit_to_an_account_below_its_floor_still_succeeds() -> None:
    decision = decide(credit("a", 1), accounts(account("a", -10)))
    assert postings_of(decision)[0] == Posting("a", 1)


def test_credit_to_a_missing_account_fails_with_account_not_found() -> None:
    decision = decide(credit("ghost", 1), {})
    assert failure_code(decision) is ErrorCode.account_not_found
    assert isinstance(decision, Failure) and "ghost" in decision.message


# --- debits -----------------------------------------------------------------


def test_debit_takes_the_amount_from_the_account_to_the_external_account() -> None:
    decision = decide(debit("a", 40), accounts(account("a", 100)))
    assert postings_of(decision) == [Posting("a", -40), Posting("@external:USD", 40)]


def test_debit_of_exactly_the_available_balance_succeeds() -> None:
    assert postings_of(decide(debit("a", 100), accounts(account("a", 100))))


def test_debit_over_available_fails_with_insufficient_funds() -> None:
    decision = decide(debit("a", 101), accounts(account("a", 100)))
    assert failure_code(decision) is ErrorCode.insufficient_funds


def test_debit_counts_held_money_as_unavailable() -> None:
    state = accounts(account("a", 100, held=60))
    assert postings_of(decide(debit("a", 40), state))
    assert failure_code(decide(debit("a", 41), state)) is ErrorCode.insufficient_funds


def test_debit_may_reach_minus_the_overdraft_limit_but_not_one_further() -> None:
    state = accounts(account("a", overdraft_limit=500))
    assert postings_of(decide(debit("a", 500), state))
    assert failure_code(decide(debit("a", 501), state)) is ErrorCode.insufficient_funds


def test_debit_from_an_account_already_in_overdraft_counts_what_is_left_of_the_limit() -> None:
    state = accounts(account("a", -400, overdraft_limit=500))
    assert postings_of(decide(debit("a", 100), state))
    assert failure_code(decide(debit("a", 101), state)) is ErrorCode.insufficient_funds


def test_debit_from_an_empty_account_without_overdraft_fails() -> None:
    decision = decide(debit("a", 1), accounts(account("a")))
    assert failure_code(decision) is ErrorCode.insufficient_funds


def test_insufficient_funds_message_names_the_account_and_the_figures() -> None:
    decision = decide(debit("alice", 150), accounts(account("alice", 100, overdraft_limit=20)))
    assert isinstance(decision, Failure)
    for part in ("alice", "100", "20", "150"):
        assert part in decision.message


def test_debit_of_a_missing_account_fails_with_account_not_found() -> None:
    assert failure_code(decide(debit("ghost", 1), {})) is ErrorCode.account_not_found


# --- transfers --------------------------------------------------------------


def test_transfer_moves_money_between_the_accounts_without_touching_the_external_account() -> None:
    decision = decide(transfer("a", "b", 30), accounts(account("a", 100), account("b")))
    assert postings_of(decision) == [Posting("a", -30), Posting("b", 30)]


def test_transfer_to_the_same_account_fails_with_same_account() -> None:
    decision = decide(transfer("a", "a", 1), accounts(account("a", 100)))
    assert failure_code(decision) is ErrorCode.same_account


def test_transfer_to_the_same_missing_account_fails_with_same_account() -> None:
    assert failure_code(decide(transfer("a", "a", 1), {})) is ErrorCode.same_account


def test_transfer_from_a_missing_source_fails_with_account_not_found_naming_it() -> None:
    decision = decide(transfer("ghost", "b", 1), accounts(account("b")))
    assert failure_code(decision) is ErrorCode.account_not_found
    assert isinstance(decision, Failure) and "ghost" in decision.message


def test_transfer_to_a_missing_destination_fails_with_account_not_found_naming_it() -> None:
    decision = decide(transfer("a", "ghost", 1), accounts(account("a", 100)))
    assert failure_code(decision) is ErrorCode.account_not_found
    assert isinstance(decision, Failure) and "ghost" in decision.message


def test_transfer_between_currencies_fails_with_currency_mismatch() -> None:
    state = accounts(account("a", 100, currency="USD"), account("b", currency="EUR"))
    decision = decide(transfer("a", "b", 1), state)
    assert failure_code(decision) is ErrorCode.currency_mismatch
    assert isinstance(decision, Failure)
    assert "USD" in decision.message and "EUR" in decision.message


def test_currency_mismatch_is_reported_before_insufficient_funds() -> None:
    state = accounts(account("a", currency="USD"), account("b", currency="EUR"))
    assert failure_code(decide(transfer("a", "b", 1), state)) is ErrorCode.currency_mismatch


def test_transfer_over_available_fails_with_insufficient_funds() -> None:
    decision = decide(transfer("a", "b", 101), accounts(account("a", 100), account("b")))
    assert failure_code(decision) is ErrorCode.insufficient_funds


def test_transfer_may_use_the_source_overdraft_up_to_its_limit() -> None:
    state = accounts(account("a", 100, overdraft_limit=500), account("b"))
    assert postings_of(decide(transfer("a", "b", 600), state))
    assert failure_code(decide(transfer("a", "b", 601), state)) is ErrorCode.insufficient_funds


def test_transfer_ignores_the_destination_overdraft_limit() -> None:
    state = accounts(account("a"), account("b", overdraft_limit=1000))
    assert failure_code(decide(transfer("a", "b", 1), state)) is ErrorCode.insufficient_funds


def test_transfer_into_an_overdrawn_destination_succeeds() -> None:
    state = accounts(account("a", 10), account("b", -300, overdraft_limit=300))
    assert postings_of(decide(transfer("a", "b", 10), state))


def test_involved_accounts_of_a_transfer_are_source_then_destination() -> None:
    assert involved_account_ids(transfer("a", "b", 1), None) == ["a", "b"]


@pytest.mark.parametrize("make", [credit, debit], ids=["credit", "debit"])
def test_involved_accounts_of_a_credit_or_debit_is_the_account_alone(make: Any) -> None:
    assert involved_account_ids(make("a", 1), None) == ["a"]


# --- assert_balanced --------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "state"),
    [
        pytest.param(credit("a", 10), accounts(account("a")), id="credit"),
        pytest.param(debit("a", 10), accounts(account("a", 10)), id="debit"),
        pytest.param(
            transfer("a", "b", 10), accounts(account("a", 10), account("b")), id="transfer"
        ),
    ],
)
def test_every_successful_decision_is_balanced(
    operation: Operation, state: dict[str, AccountState]
) -> None:
    assert_balanced(postings_of(decide(operation, state)))


def test_balanced_postings_pass() -> None:
    assert_balanced([Posting("a", 5), Posting("b", -3), Posting("c", -2)])


def test_no_postings_are_balanced() -> None:
    assert_balanced([])


def test_unbalanced_postings_fail_loudly() -> None:
    with pytest.raises(AssertionError, match="do not balance"):
        assert_balanced([Posting("a", 5), Posting("b", -4)])


def test_held_postings_do_not_count_towards_the_posted_balance() -> None:
    assert_balanced([Posting("a", 5), Posting("b", -5), Posting("a", 7, Bucket.held)])
    with pytest.raises(AssertionError):
        assert_balanced([Posting("a", 5, Bucket.held), Posting("b", -5)])


# --- apply_postings ---------------------------------------------------------


def test_apply_postings_moves_posted_balances_and_leaves_the_input_unchanged() -> None:
    before = accounts(account("a", 100), account("b"))
    after = apply_postings(before, [Posting("a", -30), Posting("b", 30)])
    assert after["a"] == account("a", 70)
    assert after["b"] == account("b", 30)
    assert before == accounts(account("a", 100), account("b"))


def test_apply_postings_skips_accounts_it_was_not_given() -> None:
    after = apply_postings(accounts(account("a")), [Posting("a", 5), Posting("@external:USD", -5)])
    assert after == accounts(account("a", 5))


def test_apply_postings_adds_up_several_postings_to_one_account() -> None:
    after = apply_postings(accounts(account("a", 10)), [Posting("a", 5), Posting("a", -3)])
    assert after["a"].posted == 12


def test_apply_postings_moves_held_money_in_the_held_bucket() -> None:
    after = apply_postings(accounts(account("a", 100)), [Posting("a", 40, Bucket.held)])
    assert (after["a"].posted, after["a"].held, after["a"].available) == (100, 40, 60)


def test_apply_postings_keeps_every_other_field_of_the_account() -> None:
    before = AccountState("a", "EUR", 10, 0, 300, is_external=False)
    after = apply_postings(accounts(before), [Posting("a", -5)])["a"]
    assert (after.currency, after.overdraft_limit, after.is_external) == ("EUR", 300, False)


def test_apply_postings_fails_loudly_when_a_debited_account_goes_below_its_floor() -> None:
    with pytest.raises(AssertionError, match="below its floor"):
        apply_postings(accounts(account("a", 10)), [Posting("a", -11)])


def test_apply_postings_allows_a_debit_to_exactly_the_floor() -> None:
    after = apply_postings(accounts(account("a", overdraft_limit=50)), [Posting("a", -50)])
    assert after["a"].available == -50


def test_apply_postings_fails_loudly_when_held_goes_below_zero() -> None:
    with pytest.raises(AssertionError, match="held below zero"):
        apply_postings(accounts(account("a", 10)), [Posting("a", -1, Bucket.held)])


def test_apply_postings_lets_a_credit_reach_an_account_already_below_its_floor() -> None:
    # A floor that was lowered later must not block money coming in.
    after = apply_postings(accounts(account("a", -100)), [Posting("a", 30)])
    assert after["a"].posted == -70


# --- properties -------------------------------------------------------------

amounts = st.integers(min_value=limits.amount_min, max_value=limits.amount_max)
balances = st.integers(min_value=-(10**15), max_value=10**15)
overdraft_limits = st.integers(min_value=0, max_value=limits.overdraft_limit_max)


@given(posted=balances, held=st.integers(0, 10**15), limit=overdraft_limits, amount=amounts)
def test_a_debit_succeeds_exactly_when_it_keeps_available_at_or_above_the_floor(
    posted: int, held: int, limit: int, amount: int
) -> None:
    state = accounts(account("a", posted, held=held, overdraft_limit=limit))
    decision = decide(debit("a", amount), state)
    if posted - held - amount >= -limit:
        after = apply_postings(state, postings_of(decision))
        assert after["a"].available == posted - held - amount
    else:
        assert failure_code(decision) is ErrorCode.insufficient_funds


@given(source=balances, destination=balances, limit=overdraft_limits, amount=amounts)
def test_a_successful_transfer_conserves_money_and_respects_the_source_floor(
    source: int, destination: int, limit: int, amount: int
) -> None:
    state = accounts(account("a", source, overdraft_limit=limit), account("b", destination))
    decision = decide(transfer("a", "b", amount), state)
    if isinstance(decision, Failure):
        assert decision.code is ErrorCode.insufficient_funds
        assert source - amount < -limit
        return
    assert_balanced(decision.postings)
    after = apply_postings(state, decision.postings)
    assert after["a"].posted + after["b"].posted == source + destination
    assert after["a"].available >= after["a"].floor


def test_capture_of_an_active_hold_past_expires_at_fails_with_hold_expired_before_any_expiry() -> (
    None
):
    from datetime import UTC, datetime, timedelta

    from billing import holds as hold_rules
    from billing.domain import AccountState, HoldState, HoldStatus

    now = datetime(2026, 11, 24, tzinfo=UTC)
    hold = HoldState(
        "h1", "alice", None, 300, 0, 300, HoldStatus.active, now - timedelta(seconds=1)
    )
    accounts = {"alice": AccountState("alice", "USD", 1000, 300, 0)}
    decision = hold_rules.capture({"hold_id": "h1"}, accounts, hold, now)
    assert getattr(decision, "code", None) == "hold_expired"
    assert hold_rules.release(hold, now, "h1").code == "hold_expired"  # type: ignore[union-attr]
    assert hold_rules.capture({"hold_id": "h1"}, accounts, hold, now - timedelta(seconds=2)).hold
