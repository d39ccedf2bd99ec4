"""Reversals through the service layer, against the in-memory unit of work."""

from __future__ import annotations

from billing.domain import Operation, OperationType
from billing.representation import render_operation
from tests.unit.service_driver import Service


def test_reversals_of_a_debit_add_up_on_it_and_the_last_one_too_many_fails(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100)
    ledger.run("debit", "d", account_id="alice", amount=80)
    ledger.run("reversal", "r1", reverses="d", amount=30)
    ledger.run("reversal", "r2", reverses="d")
    ledger.run("reversal", "r3", reverses="d", amount=1)

    assert ledger.outcome("r2") == ("succeeded", None)
    assert ledger.outcome("r3") == ("failed", "amount_exceeds_reversible")
    assert ledger.balances("alice") == (100, 0, 100)
    assert ledger.entries_of("r1") == [("@external:USD", "posted", -30), ("alice", "posted", 30)]
    shown = render_operation(ledger.record("d"))
    assert (shown["reversed"], shown["reversals"]) == (80, ["r1", "r2"])
    ledger.check()


def test_a_reversal_later_in_a_batch_sees_its_operation_applied(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept_batch(
        [
            Operation("r0", OperationType.reversal, {"reverses": "c"}),
            Operation("c", OperationType.credit, {"account_id": "alice", "amount": 50}),
            Operation("r1", OperationType.reversal, {"reverses": "c", "amount": 20}),
        ]
    )
    ledger.apply("r1")

    assert ledger.outcome("r0") == ("failed", "operation_not_reversible")
    assert ledger.outcome("r1") == ("succeeded", None)
    assert ledger.balances("alice") == (30, 0, 30)
    assert ledger.record("c").reversed == 20
    ledger.check()


def test_an_event_shows_its_operation_as_it_completed(ledger: Service) -> None:
    ledger.funded("alice", 10)
    ledger.run("credit", "c", account_id="alice", amount=5, metadata={"k": "v"})
    ledger.run("reversal", "r", reverses="c")
    with ledger.uow as uow:
        (event,) = uow.outbox.unpublished_events(["c"])
    assert isinstance(event.body, dict)
    assert (event.body["metadata"], event.body["reversed"], event.body["reversals"]) == (
        {"k": "v"},
        0,
        [],
    )
    assert render_operation(ledger.record("c"))["reversals"] == ["r"]
