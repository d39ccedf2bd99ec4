"""Credits, debits and transfers through the service layer, against the in-memory unit of work:
outcomes, balances, entries, failures as stored values, and idempotency."""

from __future__ import annotations

import pytest

from billing import limits
from billing.domain import OperationType
from billing.service import Acceptance
from tests.unit.service_driver import Service

# --- credits and debits -------------------------------------------------------


def test_a_credit_succeeds_and_raises_posted_and_available(ledger: Service) -> None:
    ledger.open("alice")
    record = ledger.run("credit", "c1", account_id="alice", amount=250)
    assert ledger.outcome("c1") == ("succeeded", None)
    assert record.balances == {"alice": {"posted": 250, "held": 0, "available": 250}}
    assert ledger.balances("alice") == (250, 0, 250)
    ledger.check()


def test_a_credit_writes_one_entry_for_the_account_and_one_for_the_external_account(
    ledger: Service,
) -> None:
    ledger.open("alice", currency="EUR")
    ledger.run("credit", "c1", account_id="alice", amount=40)
    assert ledger.entries_of("c1") == [("@external:EUR", "posted", -40), ("alice", "posted", 40)]


def test_a_debit_takes_money_out_against_the_external_account(ledger: Service) -> None:
    ledger.funded("alice", 100)
    ledger.run("debit", "d1", account_id="alice", amount=30)
    assert ledger.balances("alice") == (70, 0, 70)
    assert ledger.entries_of("d1") == [("@external:USD", "posted", 30), ("alice", "posted", -30)]
    ledger.check()


def test_a_debit_of_exactly_the_available_balance_leaves_zero(ledger: Service) -> None:
    ledger.funded("alice", 100)
    record = ledger.run("debit", "d1", account_id="alice", amount=100)
    assert record.balances == {"alice": {"posted": 0, "held": 0, "available": 0}}


def test_a_debit_over_available_fails_with_insufficient_funds_and_changes_nothing(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100)
    record = ledger.run("debit", "d1", account_id="alice", amount=101)
    assert ledger.outcome("d1") == ("failed", "insufficient_funds")
    assert record.error_message and "alice" in record.error_message
    assert record.balances is None
    assert ledger.entries_of("d1") == []
    assert ledger.balances("alice") == (100, 0, 100)
    ledger.check()


def test_a_debit_may_reach_minus_the_overdraft_limit_and_not_one_further(
    ledger: Service,
) -> None:
    ledger.open("alice", overdraft_limit=500)
    ledger.run("debit", "d1", account_id="alice", amount=500)
    ledger.run("debit", "d2", account_id="alice", amount=1)
    assert ledger.outcome("d1") == ("succeeded", None)
    assert ledger.outcome("d2") == ("failed", "insufficient_funds")
    assert ledger.balances("alice") == (-500, 0, -500)


def test_a_credit_to_an_account_at_its_overdraft_floor_succeeds(ledger: Service) -> None:
    ledger.open("alice", overdraft_limit=500)
    ledger.run("debit", "d1", account_id="alice", amount=500)
    ledger.run("credit", "c1", account_id="alice", amount=1)
    assert ledger.balances("alice") == (-499, 0, -499)


@pytest.mark.parametrize("kind", ["credit", "debit"])
def test_a_credit_or_debit_of_a_missing_account_fails_with_account_not_found(
    ledger: Service, kind: str
) -> None:
    record = ledger.run(kind, "op", account_id="nobody", amount=10)
    assert ledger.outcome("op") == ("failed", "account_not_found")
    assert record.error_message and "nobody" in record.error_message
    assert ledger.entries_of("op") == []


def test_a_credit_past_the_balance_limit_fails_with_balance_limit_exceeded(
    ledger: Service,
) -> None:
    ledger.funded("alice", limits.amount_max)
    for n in range(limits.balance_max // limits.amount_max - 1):
        ledger.run("credit", f"c{n}", account_id="alice", amount=limits.amount_max)
    assert ledger.balances("alice")[0] == limits.balance_max
    ledger.run("credit", "over", account_id="alice", amount=1)
    assert ledger.outcome("over") == ("failed", "balance_limit_exceeded")
    assert ledger.balances("alice")[0] == limits.balance_max
    ledger.check()


# --- transfers ------------------------------------------------------------------


def test_a_transfer_moves_money_between_two_accounts_and_touches_no_external_one(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100)
    ledger.open("bob")
    record = ledger.run(
        "transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=40
    )
    assert record.balances == {
        "alice": {"posted": 60, "held": 0, "available": 60},
        "bob": {"posted": 40, "held": 0, "available": 40},
    }
    assert ledger.entries_of("t1") == [("alice", "posted", -40), ("bob", "posted", 40)]
    ledger.check()


def test_a_transfer_locks_its_two_accounts_in_one_fixed_order(ledger: Service) -> None:
    ledger.funded("zoe", 100)
    ledger.open("adam")
    ledger.uow.locked.clear()
    ledger.run("transfer", "t1", source_account_id="zoe", destination_account_id="adam", amount=1)
    assert ledger.uow.locked == [["adam", "zoe"]]


def test_a_transfer_over_available_fails_with_insufficient_funds(ledger: Service) -> None:
    ledger.funded("alice", 100)
    ledger.open("bob")
    ledger.run(
        "transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=101
    )
    assert ledger.outcome("t1") == ("failed", "insufficient_funds")
    assert (ledger.balances("alice"), ledger.balances("bob")) == ((100, 0, 100), (0, 0, 0))


def test_a_transfer_may_use_the_source_overdraft_down_to_its_floor(ledger: Service) -> None:
    ledger.funded("alice", 100, overdraft_limit=500)
    ledger.open("bob")
    ledger.run(
        "transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=601
    )
    ledger.run(
        "transfer", "t2", source_account_id="alice", destination_account_id="bob", amount=600
    )
    assert ledger.outcome("t1") == ("failed", "insufficient_funds")
    assert ledger.outcome("t2") == ("succeeded", None)
    assert (ledger.balances("alice"), ledger.balances("bob")) == ((-500, 0, -500), (600, 0, 600))


def test_the_destination_overdraft_lends_the_source_nothing(ledger: Service) -> None:
    ledger.open("alice")
    ledger.open("bob", overdraft_limit=1000)
    ledger.run("transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=1)
    assert ledger.outcome("t1") == ("failed", "insufficient_funds")


def test_a_transfer_to_the_same_account_fails_with_same_account(ledger: Service) -> None:
    ledger.funded("alice", 100)
    ledger.run(
        "transfer", "t1", source_account_id="alice", destination_account_id="alice", amount=10
    )
    assert ledger.outcome("t1") == ("failed", "same_account")
    assert ledger.balances("alice") == (100, 0, 100)


def test_a_transfer_between_currencies_fails_with_currency_mismatch_naming_both(
    ledger: Service,
) -> None:
    ledger.funded("dollars", 100, currency="USD")
    ledger.funded("euros", 100, currency="EUR")
    record = ledger.run(
        "transfer", "t1", source_account_id="dollars", destination_account_id="euros", amount=10
    )
    assert ledger.outcome("t1") == ("failed", "currency_mismatch")
    assert record.error_message and "USD" in record.error_message
    assert "EUR" in record.error_message
    assert ledger.balances("dollars") == ledger.balances("euros") == (100, 0, 100)


@pytest.mark.parametrize(
    ("source", "destination", "missing"),
    [("nobody", "bob", "nobody"), ("alice", "nobody", "nobody"), ("ghost", "nobody", "ghost")],
)
def test_a_transfer_with_a_missing_account_fails_with_account_not_found_naming_it(
    ledger: Service, source: str, destination: str, missing: str
) -> None:
    ledger.funded("alice", 100)
    ledger.funded("bob", 100)
    record = ledger.run(
        "transfer", "t1", source_account_id=source, destination_account_id=destination, amount=10
    )
    assert ledger.outcome("t1") == ("failed", "account_not_found")
    assert record.error_message and missing in record.error_message
    assert ledger.balances("alice") == ledger.balances("bob") == (100, 0, 100)


def test_a_failed_operation_is_stored_completed_with_its_ledger_number(ledger: Service) -> None:
    record = ledger.run("credit", "c1", account_id="nobody", amount=1)
    assert record.completed_at == ledger.clock.now
    assert record.ledger_seq is not None


def test_posted_money_sums_to_zero_in_every_currency_after_any_mix(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    ledger.funded("bob", 50)
    ledger.funded("pound", 1234, currency="GBP")
    ledger.run("debit", "d1", account_id="alice", amount=300)
    ledger.run("transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=7)
    ledger.run("debit", "d2", account_id="pound", amount=34)
    ledger.check()


# --- idempotency ----------------------------------------------------------------


def test_applying_an_operation_twice_applies_it_once(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=25)
    first = ledger.apply("c1")
    again = ledger.apply("c1")
    assert [(a.newly_applied, a.event_ids) for a in first] == [(True, ["c1"])]
    assert [(a.found, a.newly_applied, a.event_ids) for a in again] == [(True, False, [])]
    assert ledger.balances("alice") == (25, 0, 25)
    assert len(ledger.entries_of("c1")) == 2


def test_the_same_id_given_twice_in_one_task_is_applied_once(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=25)
    applied = ledger.apply("c1", "c1")
    assert [a.operation_id for a in applied] == ["c1"]
    assert ledger.balances("alice") == (25, 0, 25)


def test_a_failed_operation_applied_again_keeps_its_failure_once_it_could_succeed(
    ledger: Service,
) -> None:
    ledger.run("credit", "c1", account_id="late", amount=5)
    ledger.open("late")
    ledger.apply("c1")
    assert ledger.outcome("c1") == ("failed", "account_not_found")
    assert ledger.balances("late") == (0, 0, 0)


def test_an_unknown_operation_id_is_reported_not_found_and_applies_nothing(
    ledger: Service,
) -> None:
    (applied,) = ledger.apply("ghost")
    assert (applied.found, applied.newly_applied, applied.event_ids) == (False, False, [])
    assert ledger.uow.committed.entries == []


def test_a_retry_of_a_pending_operation_is_recognised_and_applied_once(ledger: Service) -> None:
    ledger.open("alice")
    assert ledger.accept("credit", "c1", account_id="alice", amount=9) is Acceptance.accepted
    assert ledger.accept("credit", "c1", account_id="alice", amount=9) is Acceptance.repeated
    ledger.apply("c1")
    ledger.apply("c1")
    assert ledger.balances("alice") == (9, 0, 9)


@pytest.mark.parametrize(
    ("kind", "request_body"),
    [
        pytest.param("credit", {"account_id": "alice", "amount": 26}, id="another_amount"),
        pytest.param("credit", {"account_id": "bob", "amount": 25}, id="another_account"),
        pytest.param("debit", {"account_id": "alice", "amount": 25}, id="another_type"),
    ],
)
def test_the_same_id_with_another_body_or_type_is_a_conflict_that_changes_nothing(
    ledger: Service, kind: str, request_body: dict[str, object]
) -> None:
    ledger.open("alice")
    ledger.open("bob")
    ledger.run("credit", "c1", account_id="alice", amount=25)
    assert ledger.accept(kind, "c1", **request_body) is Acceptance.conflict
    ledger.apply("c1")
    assert ledger.record("c1").operation.type is OperationType.credit
    assert ledger.record("c1").operation.request == {"account_id": "alice", "amount": 25}
    assert ledger.balances("alice") == (25, 0, 25)
    assert ledger.balances("bob") == (0, 0, 0)


def test_a_request_with_the_same_fields_in_another_order_is_the_same_request(
    ledger: Service,
) -> None:
    ledger.funded("alice", 10)
    ledger.open("bob")
    ledger.accept(
        "transfer", "t1", source_account_id="alice", destination_account_id="bob", amount=5
    )
    again = ledger.accept(
        "transfer", "t1", amount=5, destination_account_id="bob", source_account_id="alice"
    )
    assert again is Acceptance.repeated
