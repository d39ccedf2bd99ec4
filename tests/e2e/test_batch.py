"""The batch endpoint: up to 1,000 independent operations of any type in one request."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import text

from billing import service
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.config import Settings
from billing.domain import Operation, OperationType
from tests.support import stack
from tests.support.contract import assert_error
from tests.support.stack import Client, EventLog, wait_until


def test_a_batch_of_every_type_is_accepted_item_by_item_and_applied(
    client: Client, events: EventLog, new_id: Any
) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    client.create_account(alice)
    client.create_account(bob)
    credit, transfer, hold, capture = new_id("c"), new_id("t"), new_id("h"), new_id("k")
    operations = [
        {"type": "credit", "operation_id": credit, "account_id": alice, "amount": 1000},
        {
            "type": "transfer",
            "operation_id": transfer,
            "source_account_id": alice,
            "destination_account_id": bob,
            "amount": 300,
        },
        {"type": "hold", "operation_id": hold, "account_id": alice, "amount": 200},
        {"type": "capture", "operation_id": capture, "hold_id": hold, "amount": 50},
        {"type": "debit", "operation_id": new_id("d"), "account_id": bob, "amount": 10**6},
    ]
    response = client.post("/v1/operations/batch", {"operations": operations})
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [i["result"] for i in items] == ["accepted"] * 5
    assert [i["operation_id"] for i in items] == [o["operation_id"] for o in operations]
    outcomes = [client.wait(o["operation_id"]) for o in operations]
    assert [o["status"] for o in outcomes] == ["succeeded"] * 4 + ["failed"]
    assert outcomes[4]["error"]["code"] == "insufficient_funds"
    assert client.account(alice)["posted"] == 650
    assert client.account(bob)["posted"] == 300
    assert set(events.wait_for([o["operation_id"] for o in operations]))


def test_a_batch_reports_repeats_conflicts_and_invalid_items_without_failing_the_rest(
    client: Client, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    done = new_id("done")
    client.run("credits", {"operation_id": done, "account_id": alice, "amount": 5})
    fresh = new_id("fresh")
    response = client.post(
        "/v1/operations/batch",
        {
            "operations": [
                {"type": "credit", "operation_id": done, "account_id": alice, "amount": 5},
                {"type": "credit", "operation_id": done, "account_id": alice, "amount": 6},
                {"type": "credit", "operation_id": fresh, "account_id": alice, "amount": 1.5},
                {"type": "refund", "operation_id": new_id("x")},
                "not an object",
                {"type": "credit", "operation_id": fresh, "account_id": alice, "amount": 7},
            ]
        },
    )
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [i["result"] for i in items] == [
        "repeated",
        "idempotency_conflict",
        "validation_error",
        "validation_error",
        "validation_error",
        "accepted",
    ]
    assert items[0]["operation"]["status"] == "succeeded"
    assert items[2]["error"]["details"] == {"amount": ["Must be a JSON integer."]}
    assert items[4]["operation_id"] is None
    assert client.wait(fresh)["status"] == "succeeded"
    assert client.account(alice)["posted"] == 12


def test_a_batch_must_hold_one_to_a_thousand_operations(client: Client, new_id: Any) -> None:
    assert client.post("/v1/operations/batch", {"operations": []}).status_code == 422
    too_many = [
        {"type": "credit", "operation_id": f"x{i}", "account_id": "a", "amount": 1}
        for i in range(1001)
    ]
    assert client.post("/v1/operations/batch", {"operations": too_many}).status_code == 422
    assert client.post("/v1/operations/batch", [1]).status_code == 422


def test_a_thousand_operations_in_one_batch_are_all_applied(client: Client, new_id: Any) -> None:
    accounts = [new_id(f"a{i}") for i in range(10)]
    for account in accounts:
        client.create_account(account)
    operations = [
        {
            "type": "credit",
            "operation_id": new_id(f"c{i}"),
            "account_id": accounts[i % 10],
            "amount": i + 1,
        }
        for i in range(1000)
    ]
    response = client.post("/v1/operations/batch", {"operations": operations})
    assert response.status_code == 202
    for operation in operations[::97] + operations[-1:]:
        assert client.wait(operation["operation_id"])["status"] == "succeeded"
    total = sum(client.account(a)["posted"] for a in accounts)
    assert total == sum(range(1, 1001))


def test_an_id_given_twice_in_one_batch_is_recorded_once_as_first_given(
    client: Client, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    same, other = new_id("same"), new_id("other")
    response = client.post(
        "/v1/operations/batch",
        {
            "operations": [
                {"type": "credit", "operation_id": same, "account_id": alice, "amount": 3},
                {"type": "credit", "operation_id": same, "account_id": alice, "amount": 3},
                {"type": "credit", "operation_id": other, "account_id": alice, "amount": 4},
                {"type": "credit", "operation_id": other, "account_id": alice, "amount": 40},
            ]
        },
    )
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [i["result"] for i in items] == [
        "accepted",
        "repeated",
        "accepted",
        "idempotency_conflict",
    ]
    assert items[2]["operation"]["request"]["amount"] == 4
    assert items[2]["operation"]["status"] == "pending"
    assert client.wait(same)["status"] == client.wait(other)["status"] == "succeeded"
    assert client.wait(other)["request"]["amount"] == 4
    assert client.account(alice)["posted"] == 7


def _chain(new_id: Any, accounts: list[str], length: int) -> list[dict[str, Any]]:
    """A credit of 1 to the first account, then transfers passing that 1 around the
    accounts: each transfer spends what the one before it brought."""
    operations = [
        {"type": "credit", "operation_id": new_id("c0"), "account_id": accounts[0], "amount": 1}
    ]
    for k in range(1, length):
        operations.append(
            {
                "type": "transfer",
                "operation_id": new_id(f"t{k}"),
                "source_account_id": accounts[(k - 1) % len(accounts)],
                "destination_account_id": accounts[k % len(accounts)],
                "amount": 1,
            }
        )
    return operations


def _outcomes_once_terminal(engine: Any, operation_ids: list[str]) -> Counter[tuple[str, str]]:
    """How many of the operations ended with each (status, error code), once none is pending."""
    query = text(
        "SELECT status, coalesce(error_code, '') FROM operations WHERE operation_id = ANY(:ids)"
    )

    def read() -> Counter[tuple[str, str]]:
        with engine.connect() as connection:
            return Counter(map(tuple, connection.execute(query, {"ids": operation_ids})))

    wait_until(
        lambda: read()["pending", ""] == 0 and sum(read().values()) == len(operation_ids),
        120,
        "every operation of the batch to be applied",
        interval_s=0.1,
    )
    return read()


def test_batches_of_a_thousand_operations_each_needing_the_one_before_all_succeed(
    client: Client, engine: Any, new_id: Any
) -> None:
    # Each batch is two tasks of 500 for the workers' six processes; four batches
    # at once, so that a second half started before its first would show.
    chains = [[new_id(f"x{c}a{i}") for i in range(3)] for c in range(4)]
    for account in (a for accounts in chains for a in accounts):
        client.create_account(account)
    batches = [
        _chain(lambda name, c=c: new_id(f"x{c}{name}"), accounts, 1000)
        for c, accounts in enumerate(chains)
    ]

    def submit(operations: list[dict[str, Any]]) -> requests.Response:
        # A connection of its own per thread: a session is not shared across threads.
        return requests.post(
            f"{client.base_url}/v1/operations/batch",
            json={"operations": operations},
            headers=client.session.headers,
            timeout=60,
        )

    with ThreadPoolExecutor(len(batches)) as pool:
        responses = list(pool.map(submit, batches))
    for response in responses:
        assert response.status_code == 202, response.text
        assert [i["result"] for i in response.json()["items"]] == ["accepted"] * 1000

    ids = [o["operation_id"] for operations in batches for o in operations]
    assert _outcomes_once_terminal(engine, ids) == {("succeeded", ""): 4000}
    for accounts in chains:
        # 999 transfers after the credit: the 1 ends on account 999 % 3.
        assert [client.account(a)["posted"] for a in accounts] == [1, 0, 0]


_ENQUEUE_ONE_TASK_PER_LINE = """
import json, sys
from billing.adapters.celery_client import TaskQueue, make_celery_app

queue = TaskQueue(make_celery_app())
for line in sys.stdin:
    queue.enqueue_operations(json.loads(line))
"""


@pytest.mark.parametrize("arrival", ["reversed, one per task", "shuffled, in groups"])
def test_a_batch_whose_tasks_come_back_in_any_order_is_applied_in_its_order(
    arrival: str, client: Client, engine: Any, settings: Settings, new_id: Any
) -> None:
    accounts = [new_id(f"a{i}") for i in range(3)]
    for account in accounts:
        client.create_account(account)
    operations = [
        Operation(o.pop("operation_id"), OperationType(o.pop("type")), o)
        for o in _chain(new_id, accounts, 60)
    ]
    # Recorded but never enqueued, as when the API's tasks were lost; sent again
    # by the recovery sweep, which marks them sent again.
    service.accept_operations(operations, SqlUnitOfWork(engine), as_batch=True)
    ids = [o.operation_id for o in operations]
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE operations SET resent_at = now() WHERE operation_id = ANY(:ids)"),
            {"ids": ids},
        )
    if arrival == "reversed, one per task":
        tasks = [[operation_id] for operation_id in reversed(ids)]
    else:
        shuffled = random.Random(19).sample(ids, len(ids))
        tasks = [shuffled[start : start + 7] for start in range(0, len(shuffled), 7)]
    subprocess.run(
        [sys.executable, "-c", _ENQUEUE_ONE_TASK_PER_LINE],
        input="".join(json.dumps(task) + "\n" for task in tasks),
        text=True,
        env=stack.environment(settings),
        check=True,
        timeout=60,
    )

    assert _outcomes_once_terminal(engine, ids) == {("succeeded", ""): 60}
    assert [client.account(a)["posted"] for a in accounts] == [0, 0, 1]


def test_a_null_item_gets_its_own_validation_error_and_refuses_nothing_else(
    client: Client, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    first, last = new_id("first"), new_id("last")
    response = client.post(
        "/v1/operations/batch",
        {
            "operations": [
                {"type": "credit", "operation_id": first, "account_id": alice, "amount": 5},
                None,
                {"type": "credit", "operation_id": last, "account_id": alice, "amount": 7},
            ]
        },
    )
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [i["result"] for i in items] == ["accepted", "validation_error", "accepted"]
    assert items[1]["operation_id"] is None
    assert items[1]["error"]["code"] == "validation_error"
    assert client.wait(first)["status"] == "succeeded"
    assert client.wait(last)["status"] == "succeeded"
    assert client.account(alice)["posted"] == 12


def test_a_repeated_key_in_one_item_refuses_the_batch_body_and_records_nothing(
    client: Client, new_id: Any
) -> None:
    # A body with a repeated key is refused as a whole (the contract): it is
    # not known which of the two values the client meant.
    alice = new_id("alice")
    client.create_account(alice)
    honest, doubled = new_id("honest"), new_id("doubled")
    operations = json.dumps(
        [
            {"type": "credit", "operation_id": honest, "account_id": alice, "amount": 5},
            {"type": "credit", "operation_id": doubled, "account_id": alice, "amount": 7},
        ]
    )
    data = '{"operations": ' + operations[:-2] + ', "amount": 7000}]}'
    response = client.session.post(
        client.base_url + "/v1/operations/batch",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    error = assert_error(response, 422, "validation_error", "_body")
    assert error["details"]["_body"] == ['The key "amount" is given more than once.']
    for operation_id in (honest, doubled):
        assert client.get(f"/v1/operations/{operation_id}").status_code == 404


def test_an_item_nested_too_deep_refuses_the_batch_body_saying_why(
    client: Client, new_id: Any
) -> None:
    deep = new_id("deep")
    item = f'{{"type": "credit", "operation_id": "{deep}", "note": {"[" * 100 + "]" * 100}}}'
    response = client.session.post(
        client.base_url + "/v1/operations/batch",
        data='{"operations": [' + item + "]}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    error = assert_error(response, 422, "validation_error", "_body")
    assert "64 levels" in error["details"]["_body"][0]
