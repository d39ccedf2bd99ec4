"""Metadata and reversals through the real stack: HTTP, batches, the intake, events and races."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from sqlalchemy import text

from billing import limits
from billing.config import Settings
from tests.e2e.test_intake import publish
from tests.e2e.test_model import assert_audit_passes
from tests.support.concurrent import at_once
from tests.support.stack import Client, EventLog


def funded(client: Client, new_id: Any, amount: int, name: str = "acct") -> str:
    account = new_id(name)
    client.create_account(account)
    if amount:
        fund = {"operation_id": new_id("fund"), "account_id": account, "amount": amount}
        client.run("credits", fund)
    return account


def test_a_transfer_with_metadata_is_reversed_in_part_and_shows_it(
    client: Client, events: EventLog, new_id: Any
) -> None:
    alice, bob = funded(client, new_id, 1_000, "alice"), funded(client, new_id, 0, "bob")
    transfer, refund = new_id("t"), new_id("refund")
    body = {
        "operation_id": transfer,
        "source_account_id": alice,
        "destination_account_id": bob,
        "amount": 500,
        "metadata": {"order_id": "o-42", "lines": [{"sku": "A1", "qty": 2}]},
    }
    accepted = client.submit("transfers", body)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["metadata"] == body["metadata"]
    assert (accepted.json()["reversed"], accepted.json()["reversals"]) == (0, [])
    client.wait(transfer)

    reversal = {
        "operation_id": refund,
        "reverses": transfer,
        "amount": 200,
        "metadata": {"reason": "damaged"},
    }
    done = client.run("reversals", reversal)
    assert {k: done[k] for k in ("type", "status", "request", "metadata", "error")} == {
        "type": "reversal",
        "status": "succeeded",
        "request": {"reverses": transfer, "amount": 200},
        "metadata": {"reason": "damaged"},
        "error": None,
    }
    assert done["balances"] == {
        alice: {"posted": 700, "held": 0, "available": 700},
        bob: {"posted": 300, "held": 0, "available": 300},
    }
    assert "reversed" not in done

    shown = client.wait(transfer)
    assert (shown["reversed"], shown["reversals"]) == (200, [refund])
    assert shown["request"] == {
        k: v for k, v in body.items() if k not in ("operation_id", "metadata")
    }
    assert shown["metadata"] == body["metadata"]
    entries = client.get(f"/v1/accounts/{bob}/entries").json()["items"]
    assert (entries[0]["operation_id"], entries[0]["type"], entries[0]["amount"]) == (
        refund,
        "reversal",
        -200,
    )

    seen = events.wait_for([transfer, refund])
    (transfer_event,) = {json.dumps(e, sort_keys=True): e for e in seen[transfer]}.values()
    assert transfer_event["body"]["metadata"] == body["metadata"]
    assert transfer_event["body"]["reversed"] == 0, "an event is the operation as it completed"
    refund_event = seen[refund][0]
    assert refund_event["routing_key"] == "operation.reversal.succeeded"
    assert refund_event["body"]["metadata"] == {"reason": "damaged"}


def test_metadata_is_part_of_the_body_a_retry_is_compared_with(client: Client, new_id: Any) -> None:
    account = funded(client, new_id, 0)
    credit = {"operation_id": new_id("c"), "account_id": account, "amount": 5}
    assert client.submit("credits", {**credit, "metadata": {"a": 1}}).status_code == 202
    assert client.submit("credits", {**credit, "metadata": {"a": 1}}).status_code == 200
    for other in ({"a": 2}, {"a": True}, {}):
        response = client.submit("credits", {**credit, "metadata": other})
        assert response.status_code == 409, (other, response.text)
    assert client.submit("credits", credit).status_code == 409
    plain = {"operation_id": new_id("plain"), "account_id": account, "amount": 5}
    assert client.submit("credits", plain).status_code == 202
    # No metadata and an empty object are the same body: both are shown as {}.
    assert client.submit("credits", {**plain, "metadata": {}}).status_code == 200


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


MALFORMED = {
    "metadata over 4 KiB": ("credits", {"metadata": {"a": "x" * limits.metadata_size_max_bytes}}),
    "metadata 9 deep": ("credits", {"metadata": deep(9)}),
    "metadata not an object": ("debits", {"metadata": ["order", 42]}),
    "metadata a string": ("reversals", {"metadata": "order 42"}),
    "amount 0": ("reversals", {"amount": 0}),
    "amount negative": ("reversals", {"amount": -5}),
    "amount float": ("reversals", {"amount": 10.0}),
    "amount huge": ("reversals", {"amount": limits.amount_max + 1}),
    "amount a string": ("reversals", {"amount": "5"}),
    "unknown field": ("reversals", {"account_id": "alice"}),
    "reverses missing": ("reversals", {"reverses": None}),
    "reverses not an id": ("reversals", {"reverses": "@expiry:h-1"}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_reversal_or_metadata_is_refused_at_the_door(
    case: str, client: Client, new_id: Any
) -> None:
    path, change = MALFORMED[case]
    body: dict[str, Any] = {"operation_id": new_id("x")}
    if path == "reversals":
        body["reverses"] = "anything"
    else:
        body.update(account_id="alice", amount=1)
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    response = client.submit(path, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    wrong = {"reverses missing": "reverses", "unknown field": "account_id"}.get(case)
    assert list(error["details"]) == [wrong or next(iter(change))], error


def test_what_cannot_be_reversed_fails_with_its_code(client: Client, new_id: Any) -> None:
    """Every rule failure, in one batch: the batch's order decides what each reversal sees."""
    alice, bob = funded(client, new_id, 1_000, "alice"), funded(client, new_id, 0, "bob")
    ids = {name: new_id(name) for name in ("credit", "hold", "release", "failed", "capture")}
    ids |= {name: new_id(name) for name in ("spent", "hold2")}

    def reversal(name: str, reverses: str, **extra: Any) -> dict[str, Any]:
        ids[name] = new_id(name)
        return {"type": "reversal", "operation_id": ids[name], "reverses": reverses, **extra}

    operations = [
        # Before its credit in the batch: the credit is still pending.
        reversal("of-pending", ids["credit"]),
        {"type": "credit", "operation_id": ids["credit"], "account_id": alice, "amount": 100},
        reversal("of-credit", ids["credit"], amount=60),
        reversal("over", ids["credit"], amount=41),
        reversal("of-reversal", ids["of-credit"]),
        {"type": "hold", "operation_id": ids["hold"], "account_id": alice, "amount": 10},
        reversal("of-hold", ids["hold"]),
        {"type": "release", "operation_id": ids["release"], "hold_id": ids["hold"]},
        reversal("of-release", ids["release"]),
        {"type": "debit", "operation_id": ids["failed"], "account_id": bob, "amount": 5},
        reversal("of-failed", ids["failed"]),
        reversal("of-unknown", new_id("never")),
        # bob receives 300, spends it, then is asked to give it back.
        {
            "type": "hold",
            "operation_id": ids["hold2"],
            "account_id": alice,
            "amount": 300,
            "destination_account_id": bob,
        },
        {"type": "capture", "operation_id": ids["capture"], "hold_id": ids["hold2"]},
        {"type": "debit", "operation_id": ids["spent"], "account_id": bob, "amount": 250},
        reversal("of-capture-unfunded", ids["capture"]),
        reversal("of-capture", ids["capture"], amount=50),
    ]
    response = client.post("/v1/operations/batch", {"operations": operations})
    assert response.status_code == 202, response.text
    assert [i["result"] for i in response.json()["items"]] == ["accepted"] * len(operations)
    codes = {
        name: (client.wait(ids[name])["error"] or {}).get("code", "succeeded")
        for name in ids
        if name.startswith(("of-", "over"))
    }
    assert codes == {
        "of-pending": "operation_not_reversible",
        "of-credit": "succeeded",
        "over": "amount_exceeds_reversible",
        "of-reversal": "operation_not_reversible",
        "of-hold": "operation_not_reversible",
        "of-release": "operation_not_reversible",
        "of-failed": "operation_not_reversible",
        "of-unknown": "operation_not_reversible",
        "of-capture-unfunded": "insufficient_funds",
        "of-capture": "succeeded",
    }
    capture = client.wait(ids["capture"])
    assert (capture["reversed"], capture["reversals"]) == (50, [ids["of-capture"]])
    assert "reversed" not in client.wait(ids["hold"])
    assert client.account(alice)["posted"] == 1_000 + 40 - 300 + 50
    assert client.account(bob)["posted"] == 300 - 250 - 50


def test_a_reversal_over_the_intake_is_applied_like_one_over_http(
    settings: Settings, client: Client, new_id: Any
) -> None:
    account = funded(client, new_id, 0)
    debit = client.run("debits", {"operation_id": new_id("d"), "account_id": account, "amount": 1})
    assert debit["error"]["code"] == "insufficient_funds"
    credit = new_id("c")
    client.run("credits", {"operation_id": credit, "account_id": account, "amount": 70})
    reversal = new_id("r")
    message = {"type": "reversal", "operation_id": reversal, "reverses": credit}
    publish(settings, json.dumps({**message, "metadata": {"via": "amqp"}}))
    outcome = client.wait(reversal, may_be_unknown=True)
    assert (outcome["status"], outcome["metadata"]) == ("succeeded", {"via": "amqp"})
    assert outcome["balances"][account]["posted"] == 0
    assert client.wait(credit)["reversed"] == 70


RACING_AMOUNTS = [300, 300, 400, 250, 200, 100]


def test_concurrent_reversals_of_one_operation_never_sum_beyond_it(
    client: Client, engine: Any, settings: Settings, new_id: Any
) -> None:
    account = funded(client, new_id, 0)
    credit = new_id("c")
    client.run("credits", {"operation_id": credit, "account_id": account, "amount": 1_000})
    bodies = iter(
        [
            {"operation_id": new_id(f"r{i}"), "reverses": credit, "amount": amount}
            for i, amount in enumerate(RACING_AMOUNTS)
        ]
    )
    sent: list[dict[str, Any]] = []

    def send(session: requests.Session) -> requests.Response:
        body = next(bodies)
        sent.append(body)
        return session.post(f"{client.base_url}/v1/reversals", json=body, timeout=30)

    responses = at_once(client, len(RACING_AMOUNTS), send)
    assert [r.status_code for r in responses] == [202] * len(RACING_AMOUNTS)
    for body in sent:
        client.wait(body["operation_id"])
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT operation_id, status, error_code, CAST(request ->> 'amount' AS int) "
                "FROM operations WHERE operation_id = ANY(:ids) ORDER BY ledger_seq"
            ),
            {"ids": [b["operation_id"] for b in sent]},
        ).all()
    remaining = 1_000
    for operation_id, status, code, amount in rows:
        if amount <= remaining:
            assert status == "succeeded", (operation_id, rows)
            remaining -= amount
        else:
            assert (status, code) == ("failed", "amount_exceeds_reversible"), rows
    assert client.wait(credit)["reversed"] == 1_000 - remaining
    assert client.account(account)["posted"] == remaining
    assert_audit_passes(settings)
