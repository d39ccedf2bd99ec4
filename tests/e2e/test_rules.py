"""The rules of money applied by the workers: each failure code, and idempotency over HTTP."""

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


# --- failure codes ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["credits", "debits"])
def test_credit_or_debit_of_a_missing_account_fails_with_account_not_found(
    client: Client, engine: Any, new_id: Any, kind: str
) -> None:
    missing = new_id("nobody")
    operation = client.run(
        kind, {"operation_id": new_id("op"), "account_id": missing, "amount": 10}
    )
    assert_failed(client, engine, operation, "account_not_found", missing)


def test_transfer_from_a_missing_source_fails_and_leaves_the_destination_alone(
    client: Client, engine: Any, new_id: Any
) -> None:
    destination = funded(client, new_id, "destination", 100)
    missing = new_id("nobody")
    operation = client.run("transfers", transfer(new_id, missing, destination, 10))
    assert_failed(client, engine, operation, "account_not_found", missing)
    assert balances(client, destination) == {destination: (100, 0, 100)}


def test_transfer_to_a_missing_destination_fails_and_keeps_the_money_at_the_source(
    client: Client, engine: Any, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 100)
    missing = new_id("nobody")
    operation = client.run("transfers", transfer(new_id, source, missing, 10))
    assert_failed(client, engine, operation, "account_not_found", missing)
    assert balances(client, source) == {source: (100, 0, 100)}


def test_transfer_between_two_missing_accounts_fails_with_account_not_found(
    client: Client, engine: Any, new_id: Any
) -> None:
    operation = client.run("transfers", transfer(new_id, new_id("a"), new_id("b"), 10))
    assert_failed(client, engine, operation, "account_not_found")


def test_transfer_between_currencies_fails_with_currency_mismatch(
    client: Client, engine: Any, new_id: Any
) -> None:
    dollars = funded(client, new_id, "dollars", 100, currency="USD")
    euros = funded(client, new_id, "euros", 100, currency="EUR")
    operation = client.run("transfers", transfer(new_id, dollars, euros, 10))
    assert_failed(client, engine, operation, "currency_mismatch", "USD", "EUR")
    assert balances(client, dollars, euros) == {dollars: (100, 0, 100), euros: (100, 0, 100)}


def test_transfer_to_the_same_account_fails_with_same_account(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 100)
    operation = client.run("transfers", transfer(new_id, account, account, 10))
    assert_failed(client, engine, operation, "same_account")
    assert balances(client, account) == {account: (100, 0, 100)}


def test_debit_over_available_fails_with_insufficient_funds(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 100)
    operation = client.run(
        "debits", {"operation_id": new_id("d"), "account_id": account, "amount": 101}
    )
    assert_failed(client, engine, operation, "insufficient_funds", account)
    assert balances(client, account) == {account: (100, 0, 100)}


def test_debit_of_exactly_the_available_balance_succeeds_down_to_zero(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 100)
    operation_id = new_id("d")
    operation = client.run(
        "debits", {"operation_id": operation_id, "account_id": account, "amount": 100}
    )
    assert operation["status"] == "succeeded", operation
    assert operation["error"] is None
    assert operation["balances"] == {account: {"posted": 0, "held": 0, "available": 0}}
    assert entries_of(engine, operation_id) == sorted([(account, -100), ("@external:USD", 100)])


def test_transfer_over_available_fails_with_insufficient_funds(
    client: Client, engine: Any, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 100)
    destination = funded(client, new_id, "destination", 0)
    operation = client.run("transfers", transfer(new_id, source, destination, 101))
    assert_failed(client, engine, operation, "insufficient_funds", source)
    assert balances(client, source, destination) == {
        source: (100, 0, 100),
        destination: (0, 0, 0),
    }


def test_debit_may_use_the_overdraft_down_to_minus_its_limit_but_not_one_further(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0, overdraft_limit=500)
    to_the_floor = client.run(
        "debits", {"operation_id": new_id("d1"), "account_id": account, "amount": 500}
    )
    assert to_the_floor["status"] == "succeeded", to_the_floor
    assert to_the_floor["balances"] == {account: {"posted": -500, "held": 0, "available": -500}}
    one_more = client.run(
        "debits", {"operation_id": new_id("d2"), "account_id": account, "amount": 1}
    )
    assert_failed(client, engine, one_more, "insufficient_funds")
    assert balances(client, account) == {account: (-500, 0, -500)}


def test_debit_of_one_past_the_overdraft_limit_fails_in_one_step(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0, overdraft_limit=500)
    operation = client.run(
        "debits", {"operation_id": new_id("d"), "account_id": account, "amount": 501}
    )
    assert_failed(client, engine, operation, "insufficient_funds")
    assert balances(client, account) == {account: (0, 0, 0)}


def test_transfer_may_use_the_source_overdraft_but_not_past_it(
    client: Client, engine: Any, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 100, overdraft_limit=500)
    destination = funded(client, new_id, "destination", 0)
    too_far = client.run("transfers", transfer(new_id, source, destination, 601, "too-far"))
    assert_failed(client, engine, too_far, "insufficient_funds")
    to_the_floor = client.run("transfers", transfer(new_id, source, destination, 600, "floor"))
    assert to_the_floor["status"] == "succeeded", to_the_floor
    assert to_the_floor["balances"] == {
        source: {"posted": -500, "held": 0, "available": -500},
        destination: {"posted": 600, "held": 0, "available": 600},
    }


def test_destination_overdraft_does_not_lend_the_source_anything(
    client: Client, engine: Any, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 0)
    destination = funded(client, new_id, "destination", 0, overdraft_limit=1000)
    operation = client.run("transfers", transfer(new_id, source, destination, 1))
    assert_failed(client, engine, operation, "insufficient_funds", source)


def test_credit_never_fails_for_lack_of_funds_even_at_the_overdraft_floor(
    client: Client, new_id: Any
) -> None:
    account = funded(client, new_id, "account", 0, overdraft_limit=500)
    client.run("debits", {"operation_id": new_id("d"), "account_id": account, "amount": 500})
    credit = client.run(
        "credits", {"operation_id": new_id("c"), "account_id": account, "amount": 1}
    )
    assert credit["status"] == "succeeded", credit
    assert credit["balances"] == {account: {"posted": -499, "held": 0, "available": -499}}


def test_successful_transfer_writes_one_entry_per_account_and_none_external(
    client: Client, engine: Any, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 100)
    destination = funded(client, new_id, "destination", 0)
    body = transfer(new_id, source, destination, 40)
    operation = client.run("transfers", body)
    assert operation["status"] == "succeeded"
    assert set(operation) == OPERATION_FIELDS | {"balances"}
    assert entries_of(engine, body["operation_id"]) == sorted([(source, -40), (destination, 40)])


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


def test_retry_with_the_same_fields_in_another_order_is_the_same_request(
    client: Client, new_id: Any
) -> None:
    source = funded(client, new_id, "source", 10)
    destination = funded(client, new_id, "destination", 0)
    body = transfer(new_id, source, destination, 5)
    client.run("transfers", body)
    reordered = dict(reversed(list(body.items())))
    assert list(reordered) != list(body)
    retry = client.submit("transfers", reordered)
    assert retry.status_code == 200, retry.text
    assert balances(client, source)[source] == (5, 0, 5)


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
