"""Holds through the real stack: the holds and entries listings, and idempotency over HTTP.

Every rule and error code of holds is tested against the in-memory unit of
work (tests/unit/test_service_holds.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.stack import Client


@pytest.fixture
def funded(client: Client, new_id: Any) -> Any:
    """An account with `amount` posted, created on demand."""

    def make(name: str, amount: int, **extra: Any) -> str:
        account = new_id(name)
        client.create_account(account, **extra)
        if amount:
            outcome = client.run(
                "credits",
                {"operation_id": new_id(f"fund-{name}"), "account_id": account, "amount": amount},
            )
            assert outcome["status"] == "succeeded"
        return account

    return make


def hold(
    client: Client, operation_id: str, account: str, amount: int, **extra: Any
) -> dict[str, Any]:
    return client.run(
        "holds", {"operation_id": operation_id, "account_id": account, "amount": amount, **extra}
    )


def capture(client: Client, hold_id: str, operation_id: str, **extra: Any) -> dict[str, Any]:
    return client.run(f"holds/{hold_id}/capture", {"operation_id": operation_id, **extra})


def release(client: Client, hold_id: str, operation_id: str) -> dict[str, Any]:
    return client.run(f"holds/{hold_id}/release", {"operation_id": operation_id})


def test_several_holds_may_be_active_on_one_account(
    client: Client, funded: Any, new_id: Any
) -> None:
    alice = funded("alice", 1000)
    for i in range(3):
        assert hold(client, new_id(f"h{i}"), alice, 300)["status"] == "succeeded"
    fourth = hold(client, new_id("h3"), alice, 101)
    assert fourth["error"]["code"] == "insufficient_funds"
    listed = client.get(f"/v1/accounts/{alice}/holds", params={"status": "active"}).json()
    assert len(listed["items"]) == 3
    assert client.account(alice)["available"] == 100


def test_partial_capture_keeps_the_hold_active_then_final_capture_releases_the_rest(
    client: Client, funded: Any, new_id: Any
) -> None:
    alice = funded("alice", 1000)
    hold_id = new_id("h")
    hold(client, hold_id, alice, 600)
    part = capture(client, hold_id, new_id("c1"), amount=100, final=False)
    assert part["balances"][alice] == {"posted": 900, "held": 500, "available": 400}
    last = capture(client, hold_id, new_id("c2"), amount=200)
    assert last["balances"][alice] == {"posted": 700, "held": 0, "available": 700}
    (listed,) = client.get(f"/v1/accounts/{alice}/holds").json()["items"]
    assert listed["status"] == "captured"
    assert (listed["captured"], listed["remaining"], listed["amount"]) == (300, 0, 600)


def test_every_hold_movement_is_in_the_entries(client: Client, funded: Any, new_id: Any) -> None:
    alice = funded("alice", 1000)
    hold_id = new_id("h")
    hold(client, hold_id, alice, 500)
    capture(client, hold_id, new_id("c"), amount=200, final=False)
    release(client, hold_id, new_id("r"))
    items = client.get(f"/v1/accounts/{alice}/entries").json()["items"]
    posted = sum(e["amount"] for e in items if e["bucket"] == "posted")
    held = sum(e["amount"] for e in items if e["bucket"] == "held")
    assert (posted, held) == (800, 0)
    assert [(e["type"], e["bucket"], e["amount"]) for e in reversed(items)] == [
        ("credit", "posted", 1000),
        ("hold", "held", 500),
        ("capture", "held", -200),
        ("capture", "posted", -200),
        ("release", "held", -300),
    ]


def test_hold_capture_and_release_are_idempotent(client: Client, funded: Any, new_id: Any) -> None:
    alice = funded("alice", 1000)
    hold_id, capture_id = new_id("h"), new_id("c")
    hold(client, hold_id, alice, 500)
    capture(client, hold_id, capture_id, amount=100, final=False)
    again = client.submit(
        f"holds/{hold_id}/capture", {"operation_id": capture_id, "amount": 100, "final": False}
    )
    assert again.status_code == 200
    other = client.submit(f"holds/{hold_id}/capture", {"operation_id": capture_id, "amount": 99})
    assert other.status_code == 409
    assert client.account(alice)["posted"] == 900
