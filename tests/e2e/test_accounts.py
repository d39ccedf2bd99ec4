"""Accounts over HTTP: creation and its idempotency, reading, entries and their pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.support.concurrent import at_once
from tests.support.contract import assert_error
from tests.support.stack import Client

ACCOUNT_FIELDS = {
    "account_id",
    "currency",
    "posted",
    "held",
    "available",
    "overdraft_limit",
    "metadata",
    "created_at",
}
ENTRY_FIELDS = {"entry_id", "operation_id", "type", "amount", "posted_after", "created_at"}


def assert_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).tzinfo is not None, value


def all_entries(client: Client, account_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/accounts/{account_id}/entries", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_new_account_is_created_with_201_and_zero_balances(client: Client, new_id: Any) -> None:
    account_id = new_id("alice")
    response = client.post(
        "/v1/accounts", {"account_id": account_id, "currency": "EUR", "metadata": {"tier": "gold"}}
    )
    assert response.status_code == 201, response.text
    account = response.json()
    assert set(account) == ACCOUNT_FIELDS
    assert account["account_id"] == account_id
    assert account["currency"] == "EUR"
    assert (account["posted"], account["held"], account["available"]) == (0, 0, 0)
    assert account["overdraft_limit"] == 0
    assert account["metadata"] == {"tier": "gold"}
    assert_timestamp(account["created_at"])


def test_account_without_metadata_gets_an_empty_object(client: Client, new_id: Any) -> None:
    account = client.create_account(new_id("alice"))
    assert account["metadata"] == {}


def test_creating_the_same_account_again_answers_200_with_the_existing_account(
    client: Client, new_id: Any
) -> None:
    body = {"account_id": new_id("alice"), "currency": "USD", "overdraft_limit": 500}
    first = client.post("/v1/accounts", body)
    again = client.post("/v1/accounts", body)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()


def test_repeat_with_other_metadata_is_refused_with_account_conflict_and_keeps_the_original(
    client: Client, new_id: Any
) -> None:
    account_id = new_id("alice")
    client.post("/v1/accounts", {"account_id": account_id, "currency": "USD", "metadata": {"a": 1}})
    again = client.post(
        "/v1/accounts", {"account_id": account_id, "currency": "USD", "metadata": {"b": 2}}
    )
    assert_error(again, 409, "account_conflict")
    assert client.account(account_id)["metadata"] == {"a": 1}


def test_repeat_with_the_same_metadata_in_another_key_order_answers_200(
    client: Client, new_id: Any
) -> None:
    account_id = new_id("alice")
    metadata = {"name": "Alice", "tags": ["a", "b"], "limits": {"daily": 10, "rate": 1.5}}
    first = client.post(
        "/v1/accounts", {"account_id": account_id, "currency": "USD", "metadata": metadata}
    )
    reordered = {"limits": {"rate": 1.5, "daily": 10}, "tags": ["a", "b"], "name": "Alice"}
    again = client.post(
        "/v1/accounts", {"metadata": reordered, "currency": "USD", "account_id": account_id}
    )
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()


def test_repeat_answers_200_with_current_balances_not_the_ones_at_creation(
    client: Client, new_id: Any
) -> None:
    account_id = new_id("alice")
    client.create_account(account_id)
    client.run("credits", {"operation_id": new_id("c"), "account_id": account_id, "amount": 70})
    again = client.post("/v1/accounts", {"account_id": account_id, "currency": "USD"})
    assert again.status_code == 200, again.text
    assert (again.json()["posted"], again.json()["available"]) == (70, 70)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"currency": "EUR"}, id="other_currency"),
        pytest.param({"overdraft_limit": 501}, id="other_overdraft_limit"),
        pytest.param({"overdraft_limit": 0}, id="overdraft_limit_back_to_zero"),
        pytest.param({"overdraft_limit": None}, id="overdraft_limit_left_out"),
        pytest.param({"currency": "EUR", "overdraft_limit": 0}, id="both_different"),
        pytest.param({"metadata": {"tier": "silver"}}, id="other_metadata"),
        pytest.param({"metadata": {"tier": "gold", "extra": 1}}, id="metadata_with_a_key_more"),
        pytest.param({"metadata": {"tier": ["gold"]}}, id="metadata_value_of_another_type"),
        pytest.param({"metadata": {}}, id="empty_metadata"),
        pytest.param({"metadata": None}, id="metadata_left_out"),
    ],
)
def test_same_account_id_with_other_values_is_refused_with_account_conflict(
    client: Client, new_id: Any, changes: dict[str, Any]
) -> None:
    original = {
        "account_id": new_id("alice"),
        "currency": "USD",
        "overdraft_limit": 500,
        "metadata": {"tier": "gold"},
    }
    created = client.post("/v1/accounts", original)
    assert created.status_code == 201, created.text
    other = {k: v for k, v in {**original, **changes}.items() if v is not None}
    assert_error(client.post("/v1/accounts", other), 409, "account_conflict")
    assert client.account(original["account_id"]) == created.json()


def test_account_created_five_times_at_once_is_created_exactly_once(
    client: Client, new_id: Any
) -> None:
    body = {"account_id": new_id("alice"), "currency": "USD"}
    url = client.base_url + "/v1/accounts"
    responses = at_once(client, 5, lambda session: session.post(url, json=body, timeout=30))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["created_at"] for r in responses}) == 1


def test_account_reads_back_exactly_the_contract_fields(client: Client, new_id: Any) -> None:
    account_id = new_id("alice")
    client.post(
        "/v1/accounts",
        {"account_id": account_id, "currency": "JPY", "overdraft_limit": 250, "metadata": {"x": 1}},
    )
    account = client.account(account_id)
    assert set(account) == ACCOUNT_FIELDS
    assert account == {
        "account_id": account_id,
        "currency": "JPY",
        "posted": 0,
        "held": 0,
        "available": 0,
        "overdraft_limit": 250,
        "metadata": {"x": 1},
        "created_at": account["created_at"],
    }
    assert_timestamp(account["created_at"])


def test_account_in_overdraft_reads_back_a_negative_available_balance(
    client: Client, new_id: Any
) -> None:
    account_id = new_id("alice")
    client.create_account(account_id, overdraft_limit=500)
    debit = client.run(
        "debits", {"operation_id": new_id("d"), "account_id": account_id, "amount": 120}
    )
    assert debit["status"] == "succeeded", debit
    account = client.account(account_id)
    assert (account["posted"], account["held"], account["available"]) == (-120, 0, -120)


def test_unknown_account_is_answered_404_not_found(client: Client, new_id: Any) -> None:
    assert_error(client.get(f"/v1/accounts/{new_id('nobody')}"), 404, "not_found")


def test_entries_of_an_unknown_account_are_answered_404_not_found(
    client: Client, new_id: Any
) -> None:
    assert_error(client.get(f"/v1/accounts/{new_id('nobody')}/entries"), 404, "not_found")


def test_new_account_has_no_entries(client: Client, new_id: Any) -> None:
    account_id = new_id("alice")
    client.create_account(account_id)
    response = client.get(f"/v1/accounts/{account_id}/entries")
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


def test_entries_are_newest_first_with_signed_amounts_and_the_balance_after_each(
    client: Client, new_id: Any
) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    client.create_account(alice)
    client.create_account(bob)
    steps = [
        ("credits", {"operation_id": new_id("credit"), "account_id": alice, "amount": 1000}),
        ("debits", {"operation_id": new_id("debit"), "account_id": alice, "amount": 300}),
        (
            "transfers",
            {
                "operation_id": new_id("out"),
                "source_account_id": alice,
                "destination_account_id": bob,
                "amount": 200,
            },
        ),
        (
            "transfers",
            {
                "operation_id": new_id("in"),
                "source_account_id": bob,
                "destination_account_id": alice,
                "amount": 50,
            },
        ),
    ]
    for kind, body in steps:
        assert client.run(kind, body)["status"] == "succeeded"
    entries = all_entries(client, alice)
    assert all(set(entry) >= ENTRY_FIELDS for entry in entries)
    assert [(e["operation_id"], e["type"], e["amount"], e["posted_after"]) for e in entries] == [
        (steps[3][1]["operation_id"], "transfer", 50, 550),
        (steps[2][1]["operation_id"], "transfer", -200, 500),
        (steps[1][1]["operation_id"], "debit", -300, 700),
        (steps[0][1]["operation_id"], "credit", 1000, 1000),
    ]
    ids = [e["entry_id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    for entry in entries:
        assert_timestamp(entry["created_at"])
    assert sum(e["amount"] for e in entries) == client.account(alice)["posted"] == 550
    assert [(e["amount"], e["posted_after"]) for e in all_entries(client, bob)] == [
        (-50, 150),
        (200, 200),
    ]


def test_failed_operations_leave_no_entries(client: Client, new_id: Any) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    failed = client.run("debits", {"operation_id": new_id("d"), "account_id": alice, "amount": 1})
    assert failed["status"] == "failed"
    assert all_entries(client, alice) == []


def make_entries(client: Client, new_id: Any, count: int) -> tuple[str, list[str]]:
    """An account with `count` credits of 1, 2, ... applied in order; their operation ids."""
    account_id = new_id("paged")
    client.create_account(account_id)
    operation_ids = []
    for amount in range(1, count + 1):
        operation_id = new_id(f"credit{amount}")
        body = {"operation_id": operation_id, "account_id": account_id, "amount": amount}
        assert client.run("credits", body)["status"] == "succeeded"
        operation_ids.append(operation_id)
    return account_id, operation_ids


def follow_pages(client: Client, account_id: str, limit: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = client.get(f"/v1/accounts/{account_id}/entries", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        assert len(pages) <= 20, "the cursor never ran out"
        if page["next_cursor"] is None:
            return pages
        assert isinstance(page["next_cursor"], str)
        params = {"limit": limit, "cursor": page["next_cursor"]}


@pytest.mark.parametrize(
    ("count", "limit", "sizes"),
    [
        pytest.param(7, 3, [3, 3, 1], id="7_entries_in_pages_of_3"),
        pytest.param(6, 3, [3, 3], id="6_entries_in_pages_of_3_end_without_an_empty_page"),
        pytest.param(3, 1, [1, 1, 1], id="3_entries_in_pages_of_1"),
        pytest.param(4, 100, [4], id="4_entries_fit_the_default_page"),
    ],
)
def test_cursor_pages_cover_every_entry_once_newest_first(
    client: Client, new_id: Any, count: int, limit: int, sizes: list[int]
) -> None:
    account_id, operation_ids = make_entries(client, new_id, count)
    pages = follow_pages(client, account_id, limit)
    assert [len(page) for page in pages] == sizes
    entries = [entry for page in pages for entry in page]
    assert [e["operation_id"] for e in entries] == list(reversed(operation_ids))
    assert len({e["entry_id"] for e in entries}) == count
    assert [e["amount"] for e in entries] == list(range(count, 0, -1))
    assert [e["posted_after"] for e in entries] == [n * (n + 1) // 2 for n in range(count, 0, -1)]
    assert entries == all_entries(client, account_id)


def test_cursor_stays_valid_when_newer_entries_arrive_between_pages(
    client: Client, new_id: Any
) -> None:
    account_id, operation_ids = make_entries(client, new_id, 4)
    first = client.get(f"/v1/accounts/{account_id}/entries", params={"limit": 2}).json()
    newer = {"operation_id": new_id("newer"), "account_id": account_id, "amount": 100}
    assert client.run("credits", newer)["status"] == "succeeded"
    rest = client.get(
        f"/v1/accounts/{account_id}/entries", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    seen = [e["operation_id"] for e in first["items"] + rest["items"]]
    assert seen == list(reversed(operation_ids))
    assert rest["next_cursor"] is None


def test_unknown_path_is_answered_404_with_the_contract_error_body(client: Client) -> None:
    assert_error(client.get("/v1/no-such-thing"), 404, "not_found")
    assert_error(client.get("/no-such-thing"), 404, "not_found")
    assert_error(client.get("/v1/accounts/"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("DELETE", "/v1/accounts/{account}", "GET", id="delete_account"),
        pytest.param("PUT", "/v1/accounts/{account}", "GET", id="put_account"),
        pytest.param("POST", "/v1/accounts/{account}/entries", "GET", id="post_entries"),
        pytest.param("DELETE", "/v1/accounts", "GET", id="delete_accounts"),
        pytest.param("GET", "/v1/credits", "POST", id="get_credits"),
        pytest.param("PATCH", "/v1/transfers", "POST", id="patch_transfers"),
        pytest.param("DELETE", "/v1/operations/{account}", "GET", id="delete_operation"),
    ],
)
def test_wrong_method_is_answered_405_with_the_contract_error_body_and_allow_header(
    client: Client, new_id: Any, method: str, path: str, allowed: str
) -> None:
    account_id = new_id("alice")
    client.create_account(account_id)
    url = client.base_url + path.format(account=account_id)
    response = client.session.request(method, url, json={}, timeout=30)
    assert_error(response, 405, "not_found")
    assert allowed in response.headers["Allow"].split(", ")
