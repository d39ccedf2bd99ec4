"""`BatchApplier`: operations decided one after another against the running balances of a batch,
and what it hands the write (entries with running figures, net moves, holds, completed records)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from billing.batch import BatchApplier, Entry, ledger_time
from billing.domain import (
    AccountState,
    ErrorCode,
    Failure,
    HoldState,
    HoldStatus,
    Operation,
    OperationType,
    Status,
)
from billing.ports import OperationRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ACCEPTED = NOW - timedelta(seconds=1)


def applier(*accounts: AccountState, holds: dict[str, HoldState] | None = None) -> BatchApplier:
    return BatchApplier({a.account_id: a for a in accounts}, holds or {}, NOW)


def usd(account_id: str, posted: int = 0, held: int = 0, overdraft_limit: int = 0) -> AccountState:
    return AccountState(account_id, "USD", posted, held, overdraft_limit)


def pending(operation_id: str, kind: str, **request: Any) -> OperationRecord:
    operation = Operation(operation_id, OperationType(kind), request)
    return OperationRecord(
        operation, None, None, None, ACCEPTED, None, batch_id=7, batch_position=1
    )


def test_each_operation_is_decided_against_the_balances_the_ones_before_it_left() -> None:
    batch = applier(usd("alice", 100))
    first = batch.apply(pending("d1", "debit", account_id="alice", amount=60), 1)
    second = batch.apply(pending("d2", "debit", account_id="alice", amount=60), 2)
    assert first.operation.status is Status.succeeded
    assert (second.operation.status, second.error_code) == (Status.failed, "insufficient_funds")
    assert batch.accounts["alice"].posted == 40


def test_a_credit_makes_a_running_entry_for_the_account_and_a_bare_one_for_the_external() -> None:
    batch = applier(usd("alice", 100))
    batch.apply(pending("c1", "credit", account_id="alice", amount=5), 1)
    batch.apply(pending("c2", "credit", account_id="alice", amount=7), 2)
    assert batch.entries == [
        Entry("c1", "alice", "credit", "posted", 5, 105, 0),
        Entry("c1", "@external:USD", "credit", "posted", -5, None, None),
        Entry("c2", "alice", "credit", "posted", 7, 112, 0),
        Entry("c2", "@external:USD", "credit", "posted", -7, None, None),
    ]


def test_a_completed_record_keeps_its_acceptance_and_gets_its_number_and_time() -> None:
    batch = applier(usd("alice"))
    record = batch.apply(pending("c1", "credit", account_id="alice", amount=5), 42)
    assert (record.accepted_at, record.completed_at, record.ledger_seq) == (ACCEPTED, NOW, 42)
    assert record.balances == {"alice": {"posted": 5, "held": 0, "available": 5}}
    assert batch.completed == [record]


def test_a_transfer_reports_the_balances_of_both_accounts_in_id_order() -> None:
    batch = applier(usd("zoe", 10), usd("adam"))
    record = batch.apply(
        pending("t1", "transfer", source_account_id="zoe", destination_account_id="adam", amount=4),
        1,
    )
    assert list(record.balances or {}) == ["adam", "zoe"]


def test_a_failure_writes_no_entry_moves_nothing_and_keeps_its_code_and_message() -> None:
    batch = applier(usd("alice", 10))
    record = batch.apply(pending("d1", "debit", account_id="alice", amount=11), 1)
    assert (record.error_code, record.balances) == ("insufficient_funds", None)
    assert record.error_message and "alice" in record.error_message
    assert (batch.entries, batch.balance_moves()) == ([], {})


def test_a_refused_operation_ends_with_the_refusal_whatever_the_rules_say() -> None:
    batch = applier(usd("alice", 10))
    refusal = Failure(ErrorCode.internal_error, "tampered")
    record = batch.apply(pending("c1", "credit", account_id="alice", amount=1), 1, refusal)
    assert (record.operation.status, record.error_code) == (Status.failed, "internal_error")
    assert (record.error_message, batch.entries) == ("tampered", [])


def test_balance_moves_are_the_net_change_of_each_client_account_the_batch_changed() -> None:
    batch = applier(usd("alice", 100), usd("bob"), usd("carol", 5))
    batch.apply(pending("c1", "credit", account_id="alice", amount=10), 1)
    batch.apply(
        pending(
            "t1", "transfer", source_account_id="alice", destination_account_id="bob", amount=30
        ),
        2,
    )
    batch.apply(pending("h1", "hold", account_id="bob", amount=20), 3)
    assert batch.balance_moves() == {"alice": (-20, 0), "bob": (30, 20)}
    assert batch.expected_balances({"alice", "bob"}) == {"alice": (80, 0), "bob": (30, 20)}


def test_an_operation_that_comes_back_to_the_start_moves_nothing_but_is_written() -> None:
    batch = applier(usd("alice", 100))
    batch.apply(pending("c1", "credit", account_id="alice", amount=10), 1)
    batch.apply(pending("d1", "debit", account_id="alice", amount=10), 2)
    # Alice's row is written all the same: it records the time of her newest entry.
    assert batch.balance_moves() == {"alice": (0, 0)}
    assert len(batch.entries) == 4


def test_a_batch_that_touches_no_client_balance_writes_no_account() -> None:
    batch = applier(usd("alice", 100))
    batch.apply(pending("d1", "debit", account_id="alice", amount=500), 1)
    assert batch.balance_moves() == {}
    assert batch.entries == []


def test_the_ledger_time_is_the_clock_unless_an_account_held_has_a_later_entry() -> None:
    later = NOW + timedelta(milliseconds=40)
    ahead = replace(usd("alice", 100), last_entry_at=later)
    behind = replace(usd("bob"), last_entry_at=NOW - timedelta(days=1))
    # A worker whose clock is 40 ms behind the one that wrote alice's last entry.
    batch = applier(ahead, behind)
    assert ledger_time(NOW, [ahead, behind]) == later == batch.now
    record = batch.apply(
        pending(
            "t1", "transfer", source_account_id="alice", destination_account_id="bob", amount=5
        ),
        1,
    )
    assert record.completed_at == later
    assert ledger_time(NOW, [behind, usd("carol")]) == NOW
    assert ledger_time(NOW, []) == NOW


def test_a_hold_created_in_the_batch_is_new_even_once_captured_there() -> None:
    batch = applier(usd("alice", 100))
    batch.apply(pending("h1", "hold", account_id="alice", amount=30), 1)
    batch.apply(pending("c1", "capture", hold_id="h1", amount=10), 2)
    assert (batch.new_hold_ids, batch.changed_hold_ids) == ({"h1"}, set())
    assert (batch.holds["h1"].captured, batch.holds["h1"].remaining) == (10, 0)
    assert batch.holds["h1"].status is HoldStatus.captured


def test_a_stored_hold_the_batch_captures_is_changed() -> None:
    stored = HoldState("h1", "alice", None, 30, 0, 30, HoldStatus.active, None)
    batch = applier(usd("alice", 100, held=30), holds={"h1": stored})
    batch.apply(pending("c1", "capture", hold_id="h1", amount=10, final=False), 1)
    assert (batch.new_hold_ids, batch.changed_hold_ids) == (set(), {"h1"})
    assert batch.balance_moves() == {"alice": (-10, -10)}


def test_a_capture_of_a_hold_the_batch_does_not_know_fails_with_hold_not_found() -> None:
    batch = applier(usd("alice", 100))
    record = batch.apply(pending("c1", "capture", hold_id="h1"), 1)
    assert record.error_code == "hold_not_found"


def test_a_hold_failed_in_the_batch_creates_no_hold() -> None:
    batch = applier(usd("alice", 10))
    batch.apply(pending("h1", "hold", account_id="alice", amount=11), 1)
    assert (batch.holds, batch.new_hold_ids) == ({}, set())


def test_the_applier_leaves_the_accounts_it_was_given_unchanged() -> None:
    given = {"alice": usd("alice", 10)}
    batch = BatchApplier(given, {}, NOW)
    batch.apply(pending("c1", "credit", account_id="alice", amount=5), 1)
    assert given == {"alice": usd("alice", 10)}
