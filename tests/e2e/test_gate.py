"""Nothing that reaches the workers is trusted: a task put on the queue directly passes the gate.

`billing.submit_request` is how the intake hands a message to the ledger,
but anyone who can publish to the task queue (or use Flower's task API)
can send it too. Its arguments are judged by the same gate as an HTTP
body: a request that breaks the rules is parked (a `request.rejected`
event and `billing.requests.dead`) and nothing of it is recorded or
applied.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.config import Settings
from tests.e2e.test_intake import take_dead_requests
from tests.support.stack import Client, EventLog, wait_until
from tests.support.tasks import send_task


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(-50, id="negative"),
        pytest.param(5 * 10**18, id="huge"),
        pytest.param(2.9, id="float"),
    ],
)
def test_a_credit_sent_straight_to_the_task_queue_that_breaks_the_rules_is_parked(
    settings: Settings, client: Client, events: EventLog, new_id: Any, amount: Any
) -> None:
    account = new_id("gate")
    client.create_account(account)
    assert (
        client.run(
            "credits", {"operation_id": new_id("fund"), "account_id": account, "amount": 100}
        )["status"]
        == "succeeded"
    )
    operation_id = new_id("forged")
    fields = {"operation_id": operation_id, "account_id": account, "amount": amount}

    send_task(settings, "billing.submit_request", ["credit", fields])

    def rejected() -> list[dict[str, Any]]:
        events.drain()
        return [
            m
            for m in events.messages
            if m["routing_key"] == "request.rejected"
            # The original message comes as its text (other tests' may not be JSON).
            and f'"operation_id": "{operation_id}"' in m["body"]["message"]
        ]

    wait_until(lambda: bool(rejected()), 30, "the request.rejected event")
    error = rejected()[0]["body"]["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == {"amount"}
    parked = [json.loads(body) for body in take_dead_requests(settings)]
    assert {"type": "credit", **fields} in parked
    assert client.get(f"/v1/operations/{operation_id}").status_code == 404
    assert client.account(account)["posted"] == 100


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        pytest.param("expiry", {"hold_id": "h"}, id="service_only_type"),
        pytest.param("credit", ["not", "an", "object"], id="fields_not_an_object"),
        pytest.param(
            "credit", {"account_id": "a", "amount": 5, "currency": "USD"}, id="unknown_field"
        ),
        pytest.param(["credit"], {"account_id": "a", "amount": 5}, id="type_not_a_string"),
    ],
)
def test_submit_request_arguments_of_any_other_shape_are_parked_and_applied_nowhere(
    settings: Settings, client: Client, events: EventLog, new_id: Any, kind: Any, fields: Any
) -> None:
    operation_id = new_id("shape")
    if isinstance(fields, dict):
        fields = {**fields, "operation_id": operation_id}
    else:
        fields = [*fields, operation_id]

    send_task(settings, "billing.submit_request", [kind, fields])

    def rejected() -> bool:
        events.drain()
        return any(
            m["routing_key"] == "request.rejected" and operation_id in json.dumps(m["body"])
            for m in events.messages
        )

    wait_until(rejected, 30, "the request.rejected event")
    assert client.get(f"/v1/operations/{operation_id}").status_code == 404
