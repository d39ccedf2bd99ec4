"""Credits, debits and transfers through HTTP, the queue, the workers and the events."""

from __future__ import annotations

from typing import Any

from tests.support.stack import Client, EventLog


def test_credit_then_transfer_moves_money_and_reports_balances(client: Client, new_id: Any) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    client.create_account(alice)
    client.create_account(bob)
    credit = client.run(
        "credits", {"operation_id": new_id("c"), "account_id": alice, "amount": 1000}
    )
    assert credit["status"] == "succeeded"
    assert credit["balances"] == {alice: {"posted": 1000, "held": 0, "available": 1000}}
    transfer = client.run(
        "transfers",
        {
            "operation_id": new_id("t"),
            "source_account_id": alice,
            "destination_account_id": bob,
            "amount": 300,
        },
    )
    assert transfer["status"] == "succeeded"
    assert transfer["error"] is None
    assert transfer["balances"] == {
        alice: {"posted": 700, "held": 0, "available": 700},
        bob: {"posted": 300, "held": 0, "available": 300},
    }
    assert client.account(alice)["posted"] == 700
    assert client.account(bob)["available"] == 300


def test_every_terminal_operation_publishes_its_event(
    client: Client, events: EventLog, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    ok, failed = new_id("ok"), new_id("fail")
    client.run("credits", {"operation_id": ok, "account_id": alice, "amount": 5})
    client.run("debits", {"operation_id": failed, "account_id": alice, "amount": 6})
    seen = events.wait_for([ok, failed])
    credit_event, debit_event = seen[ok][0], seen[failed][0]
    assert credit_event["routing_key"] == "operation.credit.succeeded"
    assert debit_event["routing_key"] == "operation.debit.failed"
    assert debit_event["body"]["error"]["code"] == "insufficient_funds"
    assert credit_event["body"]["schema_version"] == 1
    assert credit_event["delivery_mode"] == 2
    assert credit_event["content_type"] == "application/json"
    operation = client.wait(ok)
    assert isinstance(credit_event["body"]["event_seq"], int)
    envelope = {"schema_version", "event_seq"}
    assert {k: v for k, v in credit_event["body"].items() if k not in envelope} == operation
