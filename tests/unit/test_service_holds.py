"""Holds, captures, releases and expiry through the service layer, against the in-memory unit of
work: every outcome and error code, the balances and entries they leave, and `expire_hold`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from billing import service
from billing.domain import HoldStatus, Operation, OperationType, expiry_operation_id
from billing.ports import LockBusy
from billing.service import Acceptance
from tests.unit.fakes import Store
from tests.unit.service_driver import Service


def hold(ledger: Service, hold_id: str, account_id: str, amount: int, **extra: Any) -> str:
    ledger.run("hold", hold_id, account_id=account_id, amount=amount, **extra)
    return hold_id


def capture(ledger: Service, operation_id: str, hold_id: str, **extra: Any) -> tuple[str, Any]:
    ledger.run("capture", operation_id, hold_id=hold_id, **extra)
    return ledger.outcome(operation_id)


def release(ledger: Service, operation_id: str, hold_id: str) -> tuple[str, Any]:
    ledger.run("release", operation_id, hold_id=hold_id)
    return ledger.outcome(operation_id)


def expire(ledger: Service, hold_id: str) -> str | None:
    return service.expire_hold(hold_id, ledger.uow, ledger.clock)


# --- creating a hold --------------------------------------------------------------


def test_a_hold_moves_money_from_available_to_held(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300)
    assert ledger.outcome("h1") == ("succeeded", None)
    assert ledger.balances("alice") == (1000, 300, 700)
    assert ledger.hold("h1") == ("active", 0, 300)
    assert ledger.entries_of("h1") == [("alice", "held", 300)]
    ledger.check()


def test_several_holds_may_be_active_on_one_account_until_available_runs_out(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    for n in range(3):
        hold(ledger, f"h{n}", "alice", 300)
    hold(ledger, "h3", "alice", 101)
    assert ledger.outcome("h3") == ("failed", "insufficient_funds")
    assert "h3" not in ledger.uow.committed.holds
    assert ledger.balances("alice") == (1000, 900, 100)
    ledger.check()


def test_a_hold_may_use_the_overdraft_and_held_money_is_then_unavailable(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100, overdraft_limit=50)
    hold(ledger, "h1", "alice", 151)
    hold(ledger, "h2", "alice", 150)
    ledger.run("debit", "d1", account_id="alice", amount=1)
    assert ledger.outcome("h1") == ("failed", "insufficient_funds")
    assert ledger.outcome("h2") == ("succeeded", None)
    assert ledger.outcome("d1") == ("failed", "insufficient_funds")
    assert ledger.balances("alice") == (100, 150, -50)


@pytest.mark.parametrize("kind", ["debit", "transfer"])
def test_held_money_cannot_be_spent_by_a_debit_or_a_transfer(ledger: Service, kind: str) -> None:
    ledger.funded("alice", 100)
    ledger.open("bob")
    hold(ledger, "h1", "alice", 80)
    if kind == "debit":
        ledger.run("debit", "x", account_id="alice", amount=21)
    else:
        ledger.run(
            "transfer", "x", source_account_id="alice", destination_account_id="bob", amount=21
        )
    assert ledger.outcome("x") == ("failed", "insufficient_funds")


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"account_id": "ghost"}, "account_not_found"),
        ({"account_id": "alice", "destination_account_id": "ghost"}, "account_not_found"),
        ({"account_id": "alice", "destination_account_id": "alice"}, "same_account"),
        ({"account_id": "alice", "destination_account_id": "euro"}, "currency_mismatch"),
    ],
)
def test_a_hold_fails_on_the_rules_of_its_accounts(
    ledger: Service, request_fields: dict[str, str], code: str
) -> None:
    ledger.funded("alice", 100)
    ledger.open("euro", currency="EUR")
    ledger.run("hold", "h1", amount=1, **request_fields)
    assert ledger.outcome("h1") == ("failed", code)
    assert ledger.uow.committed.holds == {}
    assert ledger.balances("alice") == (100, 0, 100)


def test_a_hold_with_expires_in_expires_that_many_seconds_after_it_was_applied(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100)
    hold(ledger, "h1", "alice", 10, expires_in=60)
    stored = ledger.uow.committed.holds["h1"]
    assert stored.expires_at is not None and stored.created_at is not None
    assert (stored.expires_at - stored.created_at).total_seconds() == 60


# --- capture ------------------------------------------------------------------------


def test_a_partial_capture_keeps_the_hold_active_and_a_final_one_releases_the_rest(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 600)
    capture(ledger, "c1", "h1", amount=100, final=False)
    assert ledger.balances("alice") == (900, 500, 400)
    assert ledger.hold("h1") == ("active", 100, 500)
    capture(ledger, "c2", "h1", amount=200)
    assert ledger.balances("alice") == (700, 0, 700)
    assert ledger.hold("h1") == ("captured", 300, 0)
    ledger.check()


def test_a_capture_without_amount_takes_what_remains(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 250)
    capture(ledger, "c1", "h1")
    assert ledger.balances("alice") == (750, 0, 750)
    assert ledger.hold("h1") == ("captured", 250, 0)


def test_a_capture_moves_its_money_out_against_the_external_account(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 250)
    capture(ledger, "c1", "h1", amount=200, final=False)
    assert ledger.entries_of("c1") == [
        ("@external:USD", "posted", 200),
        ("alice", "held", -200),
        ("alice", "posted", -200),
    ]


def test_a_two_phase_transfer_moves_the_captured_amount_to_the_destination(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    ledger.open("bob")
    hold(ledger, "h1", "alice", 400, destination_account_id="bob")
    record = ledger.run("capture", "c1", hold_id="h1", amount=150)
    assert record.balances == {
        "alice": {"posted": 850, "held": 0, "available": 850},
        "bob": {"posted": 150, "held": 0, "available": 150},
    }
    ledger.check()


def test_a_capture_of_more_than_remains_fails_with_amount_exceeds_hold(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 100)
    assert capture(ledger, "c1", "h1", amount=101) == ("failed", "amount_exceeds_hold")
    assert ledger.balances("alice") == (1000, 100, 900)
    assert ledger.hold("h1") == ("active", 0, 100)


@pytest.mark.parametrize("operation", [capture, release])
def test_a_capture_or_release_of_an_unknown_hold_fails_with_hold_not_found(
    ledger: Service, operation: Any
) -> None:
    assert operation(ledger, "op", "no-such-hold") == ("failed", "hold_not_found")


def test_a_capture_or_release_of_an_ended_hold_fails_with_hold_not_active(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 400)
    capture(ledger, "c1", "h1", amount=100, final=False)
    assert release(ledger, "r1", "h1") == ("succeeded", None)
    assert release(ledger, "r2", "h1") == ("failed", "hold_not_active")
    assert capture(ledger, "c2", "h1") == ("failed", "hold_not_active")
    assert ledger.balances("alice") == (900, 0, 900)


def test_a_capture_after_expires_at_fails_with_hold_expired_before_any_expiry(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)
    assert capture(ledger, "c1", "h1") == ("failed", "hold_expired")
    assert release(ledger, "r1", "h1") == ("failed", "hold_expired")
    assert ledger.hold("h1") == ("active", 0, 300)


def test_a_capture_just_before_expires_at_succeeds(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(9.999)
    assert capture(ledger, "c1", "h1") == ("succeeded", None)


def test_a_capture_of_an_expired_hold_fails_with_hold_expired(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)
    expire(ledger, "h1")
    assert capture(ledger, "c1", "h1") == ("failed", "hold_expired")


# --- release ------------------------------------------------------------------------


def test_a_release_gives_back_what_remains(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 400)
    capture(ledger, "c1", "h1", amount=100, final=False)
    release(ledger, "r1", "h1")
    assert ledger.balances("alice") == (900, 0, 900)
    assert ledger.hold("h1") == ("released", 100, 0)
    assert ledger.entries_of("r1") == [("alice", "held", -300)]
    ledger.check()


def test_every_hold_movement_is_in_the_entries_in_order(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 500)
    capture(ledger, "c1", "h1", amount=200, final=False)
    release(ledger, "r1", "h1")
    assert [
        (e.type, e.bucket, e.amount)
        for e in ledger.uow.committed.entries
        if e.account_id == "alice"
    ] == [
        ("credit", "posted", 1000),
        ("hold", "held", 500),
        ("capture", "held", -200),
        ("capture", "posted", -200),
        ("release", "held", -300),
    ]


def test_a_capture_retried_with_its_id_is_repeated_and_with_another_amount_a_conflict(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 500)
    capture(ledger, "c1", "h1", amount=100, final=False)
    again = ledger.accept("capture", "c1", hold_id="h1", amount=100, final=False)
    other = ledger.accept("capture", "c1", hold_id="h1", amount=99)
    ledger.apply("c1")
    assert (again, other) == (Acceptance.repeated, Acceptance.conflict)
    assert ledger.balances("alice") == (900, 400, 500)


# --- holds within one batch ------------------------------------------------------------


def test_a_hold_and_its_capture_in_one_batch_apply_in_order(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    ledger.open("bob")
    request = {"account_id": "alice", "amount": 300, "destination_account_id": "bob"}
    ids = ledger.accept_batch(
        [
            Operation("h1", OperationType.hold, request),
            Operation("c1", OperationType.capture, {"hold_id": "h1", "amount": 100}),
            Operation("r1", OperationType.release, {"hold_id": "h1"}),
        ]
    )
    ledger.apply(*ids)
    assert [ledger.outcome(i) for i in ids] == [
        ("succeeded", None),
        ("succeeded", None),
        ("failed", "hold_not_active"),
    ]
    assert ledger.balances("alice") == (900, 0, 900)
    assert ledger.balances("bob") == (100, 0, 100)
    assert ledger.uow.locked[-1] == ["alice", "bob"]  # the hold's accounts, for the capture
    ledger.check()


# --- expiry ----------------------------------------------------------------------------


def test_expire_hold_ends_a_due_hold_and_gives_its_money_back(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(11)
    assert expire(ledger, "h1") == expiry_operation_id("h1")
    assert ledger.hold("h1") == ("expired", 0, 0)
    assert ledger.balances("alice") == (1000, 0, 1000)
    assert ledger.outcome(expiry_operation_id("h1")) == ("succeeded", None)
    assert ledger.entries_of(expiry_operation_id("h1")) == [("alice", "held", -300)]
    ledger.check()


def test_expire_hold_records_a_hold_expired_event_with_the_hold(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)
    event_id = expire(ledger, "h1")
    store = ledger.uow.committed
    (event,) = [e for e in store.events.values() if e.message_id == event_id]
    assert event.routing_key == "hold.expired"
    assert isinstance(event.body, dict)
    assert (event.body["hold_id"], event.body["status"], event.body["schema_version"]) == (
        "h1",
        "expired",
        1,
    )


def test_expire_hold_leaves_a_hold_that_is_not_due_yet(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(9)
    assert expire(ledger, "h1") is None
    assert ledger.hold("h1") == ("active", 0, 300)


def test_expire_hold_leaves_a_hold_without_expiry_an_ended_hold_and_an_unknown_one(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "forever", "alice", 100)
    hold(ledger, "captured", "alice", 100, expires_in=10)
    capture(ledger, "c1", "captured")
    ledger.clock.advance(3600)
    assert [expire(ledger, h) for h in ("forever", "captured", "unknown")] == [None] * 3
    assert ledger.balances("alice") == (900, 100, 800)


def test_a_hold_expires_once_however_often_the_job_asks(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)
    assert expire(ledger, "h1") is not None
    assert expire(ledger, "h1") is None
    assert ledger.balances("alice") == (1000, 0, 1000)
    ledger.check()


def test_due_holds_lists_the_active_holds_past_their_time_oldest_first(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "late", "alice", 10, expires_in=30)
    hold(ledger, "early", "alice", 10, expires_in=10)
    hold(ledger, "never", "alice", 10)
    hold(ledger, "future", "alice", 10, expires_in=100)
    ledger.clock.advance(40)
    assert service.due_holds(ledger.uow, limit=10) == ["early", "late"]
    assert service.due_holds(ledger.uow, limit=1) == ["early"]


def test_an_expired_two_phase_hold_leaves_the_destination_alone(ledger: Service) -> None:
    ledger.funded("alice", 1000)
    ledger.open("bob")
    hold(ledger, "h1", "alice", 300, destination_account_id="bob", expires_in=5)
    ledger.clock.advance(5)
    expire(ledger, "h1")
    assert ledger.balances("alice") == (1000, 0, 1000)
    assert ledger.balances("bob") == (0, 0, 0)


def test_expire_hold_leaves_a_hold_a_capture_ended_while_it_waited_for_the_locks(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)

    def captured_meanwhile(store: Store) -> None:
        store.holds["h1"] = replace(store.holds["h1"], status=HoldStatus.captured, remaining=0)

    ledger.uow.before_next_lock = captured_meanwhile
    assert expire(ledger, "h1") is None
    assert expiry_operation_id("h1") not in ledger.uow.committed.operations
    assert ledger.uow.committed.holds["h1"].status is HoldStatus.captured


def test_expire_hold_on_a_busy_account_raises_for_a_retry_and_changes_nothing(
    ledger: Service,
) -> None:
    ledger.funded("alice", 1000)
    hold(ledger, "h1", "alice", 300, expires_in=10)
    ledger.clock.advance(10)
    ledger.uow.busy_accounts.add("alice")
    with pytest.raises(LockBusy):
        expire(ledger, "h1")
    assert ledger.hold("h1") == ("active", 0, 300)
