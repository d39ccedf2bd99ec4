"""The rules of money through the real stack: a failure as the API answers it, the ledger's
sums in PostgreSQL, and idempotency over HTTP (status codes, retries, concurrent repeats).

Each rule and error code is tested in milliseconds against the in-memory unit
of work (tests/unit/test_service_*.py); here only what a real stack shows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.support.concurrent import at_once
from tests.support.contract import assert_error
from tests.support.stack import Client

# Of a credit, debit or transfer, the operations these tests send.
OPERATION_FIELDS = {
    "operation_id",
    "type",
    "status",
    "request",
    "metadata",
    "error",
    "accepted_at",
    "completed_at",
    "reversed",
    "reversals",
}


def entries_of(engine: Any, operation_id: str) -> list[tuple[str, int]]:
    """Every ledger entry the operation wrote, external counter-accounts included."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT account_id, amount FROM entries WHERE operation_id = :id "
                "ORDER BY account_id"
            ),
            {"id": operation_id},
        ).all()
    return [(row.account_id, row.amount) for row in rows]


def balances(client: Client, *account_ids: str) -> dict[str, tuple[int, int, int]]:
    result = {}
    for account_id in account_ids:
        account = client.account(account_id)
        result[account_id] = (account["posted"], account["held"], account["available"])
    return result


def funded(client: Client, new_id: Any, name: str, amount: int, **account: Any) -> str:
    """A new account (ids from `name`, unique within the test) credited with `amount`."""
    account_id = new_id(name)
    client.create_account(account_id, **account)
    if amount:
        credit = {
            "operation_id": new_id(f"fund-{name}"),
            "account_id": account_id,
            "amount": amount,
        }
        assert client.run("credits", credit)["status"] == "succeeded"
    return account_id


def transfer(
    new_id: Any, source: str, destination: str, amount: int, name: str = "transfer"
) -> dict[str, Any]:
    return {
        "operation_id": new_id(name),
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
    }


def assert_failed(
    client: Client, engine: Any, operation: dict[str, Any], code: str, *mentioned: str
) -> None:
    """Failed with `code`: an error, no balances, no entries, and the event-ready shape."""
    assert operation["status"] == "failed", operation
    assert set(operation) == OPERATION_FIELDS, operation
    assert set(operation["error"]) == {"code", "message"}
    assert operation["error"]["code"] == code
    assert operation["error"]["message"]
    for text_part in mentioned:
        assert text_part in operation["error"]["message"], operation["error"]
    assert operation["completed_at"] is not None
    assert entries_of(engine, operation["operation_id"]) == []


# --- a failure through the stack ------------------------------------------------


def test_a_failed_operation_is_answered_with_its_code_and_message_and_writes_no_entries(
    client: Client, engine: Any, new_id: Any
) -> None:
    dollars = funded(client, new_id, "dollars", 100, currency="USD")
    euros = funded(client, new_id, "euros", 100, currency="EUR")
    operation = client.run("transfers", transfer(new_id, dollars, euros, 10))
    assert_failed(client, engine, operation, "currency_mismatch", "USD", "EUR")
    assert balances(client, dollars, euros) == {dollars: (100, 0, 100), euros: (100, 0, 100)}


def test_posted_entries_of_every_currency_sum_to_zero(
    client: Client, engine: Any, new_id: Any
) -> None:
    funded(client, new_id, "account", 1234, currency="GBP")
    with engine.connect() as connection:
        totals = connection.execute(
            text(
                "SELECT a.currency, sum(e.amount) FROM entries e "
                "JOIN accounts a USING (account_id) WHERE e.bucket = 'posted' "
                "GROUP BY a.currency"
            )
        ).all()
    assert totals, "no entries at all"
    assert {currency: int(total) for currency, total in totals} == {
        currency: 0 for currency, _ in totals
    }


# --- idempotency ------------------------------------------------------------


def test_retry_with_the_same_body_answers_200_with_the_current_state_and_applies_once(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0)
    body = {"operation_id": new_id("c"), "account_id": account, "amount": 25}
    done = client.run("credits", body)
    retry = client.submit("credits", body)
    assert retry.status_code == 200, retry.text
    assert retry.json() == done
    assert retry.json()["status"] == "succeeded"
    assert balances(client, account) == {account: (25, 0, 25)}
    assert len(entries_of(engine, body["operation_id"])) == 2


def test_retry_of_a_failed_operation_answers_its_failure_even_once_it_could_succeed(
    client: Client, engine: Any, new_id: Any
) -> None:
    account_id = new_id("late")
    body = {"operation_id": new_id("c"), "account_id": account_id, "amount": 5}
    failed = client.run("credits", body)
    assert_failed(client, engine, failed, "account_not_found")
    client.create_account(account_id)
    retry = client.submit("credits", body)
    assert retry.status_code == 200, retry.text
    assert retry.json() == failed
    assert client.wait(body["operation_id"]) == failed
    assert balances(client, account_id) == {account_id: (0, 0, 0)}


def test_retry_while_still_pending_answers_200_and_the_operation_applies_once(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0)
    body = {"operation_id": new_id("c"), "account_id": account, "amount": 9}
    first = client.submit("credits", body)
    retry = client.submit("credits", body)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "pending"
    assert "balances" not in first.json()
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] in ("pending", "succeeded")
    assert client.wait(body["operation_id"])["status"] == "succeeded"
    assert balances(client, account) == {account: (9, 0, 9)}
    assert len(entries_of(engine, body["operation_id"])) == 2


CONFLICTS = [
    pytest.param("credits", {"amount": 26}, id="credit_with_another_amount"),
    pytest.param("credits", {"account_id": "someone-else"}, id="credit_to_another_account"),
    pytest.param("debits", {}, id="same_body_as_a_debit"),
]


@pytest.mark.parametrize(("kind", "changes"), CONFLICTS)
def test_same_operation_id_with_another_body_or_type_is_refused_with_idempotency_conflict(
    client: Client, engine: Any, new_id: Any, kind: str, changes: dict[str, Any]
) -> None:
    account = funded(client, new_id, "account", 0)
    body = {"operation_id": new_id("c"), "account_id": account, "amount": 25}
    done = client.run("credits", body)
    assert_error(client.submit(kind, {**body, **changes}), 409, "idempotency_conflict")
    assert client.wait(body["operation_id"]) == done
    assert balances(client, account) == {account: (25, 0, 25)}
    assert len(entries_of(engine, body["operation_id"])) == 2


def test_operation_id_of_a_credit_cannot_be_reused_for_a_transfer(
    client: Client, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 100)
    destination = funded(client, new_id, "destination", 0)
    operation_id = new_id("shared")
    client.run("credits", {"operation_id": operation_id, "account_id": source, "amount": 1})
    body = {**transfer(new_id, source, destination, 1), "operation_id": operation_id}
    assert_error(client.submit("transfers", body), 409, "idempotency_conflict")
    assert balances(client, source, destination) == {
        source: (101, 0, 101),
        destination: (0, 0, 0),
    }


def test_conflicting_retry_before_the_operation_applies_changes_nothing(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0)
    body = {"operation_id": new_id("c"), "account_id": account, "amount": 7}
    assert client.submit("credits", body).status_code == 202
    assert_error(client.submit("credits", {**body, "amount": 700}), 409, "idempotency_conflict")
    assert client.wait(body["operation_id"])["request"]["amount"] == 7
    assert balances(client, account) == {account: (7, 0, 7)}


@pytest.mark.parametrize("kind", ["credits", "debits", "transfers"])
def test_same_operation_sent_five_times_at_once_is_accepted_once_and_applied_once(
    client: Client, engine: Any, new_id: Any, kind: str
) -> None:
    account = funded(client, new_id, "account", 1000)
    other = funded(client, new_id, "other", 0)
    if kind == "transfers":
        body = transfer(new_id, account, other, 100)
    else:
        body = {"operation_id": new_id("op"), "account_id": account, "amount": 100}
    url = f"{client.base_url}/v1/{kind}"
    responses = at_once(client, 5, lambda session: session.post(url, json=body, timeout=30))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 202]
    assert {r.json()["operation_id"] for r in responses} == {body["operation_id"]}
    assert client.wait(body["operation_id"])["status"] == "succeeded"
    expected = {
        "credits": {account: (1100, 0, 1100), other: (0, 0, 0)},
        "debits": {account: (900, 0, 900), other: (0, 0, 0)},
        "transfers": {account: (900, 0, 900), other: (100, 0, 100)},
    }[kind]
    assert balances(client, account, other) == expected
    assert len(entries_of(engine, body["operation_id"])) == 2
