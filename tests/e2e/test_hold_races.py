"""Races on one hold: concurrent captures, releases and expiry leave exactly one terminal state."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import text

from tests.support.stack import Client, EventLog, wait_until


def _fund(client: Client, new_id: Any, amount: int) -> str:
    account = new_id("acct")
    client.create_account(account)
    client.run("credits", {"operation_id": new_id("fund"), "account_id": account, "amount": amount})
    return account


def _submit_at_once(client: Client, requests: list[tuple[str, dict[str, Any]]]) -> list[int]:
    barrier = threading.Barrier(len(requests))

    def send(item: tuple[str, dict[str, Any]]) -> int:
        barrier.wait()
        return client.submit(*item).status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_ten_concurrent_captures_and_releases_of_one_hold_never_take_more_than_held(
    client: Client, engine: Any, new_id: Any
) -> None:
    account = _fund(client, new_id, 10_000)
    hold_id = new_id("h")
    client.run("holds", {"operation_id": hold_id, "account_id": account, "amount": 1_000})
    requests = [
        (
            f"holds/{hold_id}/capture",
            {"operation_id": new_id(f"p{i}"), "amount": 300, "final": False},
        )
        for i in range(5)
    ]
    requests += [
        (f"holds/{hold_id}/capture", {"operation_id": new_id(f"f{i}"), "amount": 200})
        for i in range(3)
    ]
    requests += [(f"holds/{hold_id}/release", {"operation_id": new_id(f"r{i}")}) for i in range(2)]
    assert _submit_at_once(client, requests) == [202] * 10
    outcomes = [client.wait(body["operation_id"]) for _, body in requests]

    with engine.connect() as connection:
        ordered = (
            connection.execute(
                text(
                    "SELECT operation_id FROM operations WHERE operation_id = ANY(:ids) "
                    "ORDER BY ledger_seq"
                ),
                {"ids": [body["operation_id"] for _, body in requests]},
            )
            .scalars()
            .all()
        )
    by_id = {o["operation_id"]: o for o in outcomes}
    remaining, captured, status = 1_000, 0, "active"
    for operation_id in ordered:
        request = by_id[operation_id]["request"]
        outcome = by_id[operation_id]
        if status != "active":
            assert outcome["error"]["code"] == "hold_not_active", operation_id
            continue
        if "amount" in request and request["amount"] > remaining:
            assert outcome["error"]["code"] == "amount_exceeds_hold", operation_id
            continue
        assert outcome["status"] == "succeeded", operation_id
        if operation_id.startswith("r"):
            remaining, status = 0, "released"
        elif request.get("final", True):
            captured += request["amount"]
            remaining, status = 0, "captured"
        else:
            captured += request["amount"]
            remaining -= request["amount"]
            status = "active" if remaining else "captured"
    (listed,) = client.get(f"/v1/accounts/{account}/holds").json()["items"]
    assert (listed["captured"], listed["remaining"], listed["status"]) == (
        captured,
        remaining,
        status,
    )
    assert listed["status"] in ("captured", "released")
    assert listed["captured"] <= 1_000
    balances = client.account(account)
    assert (balances["posted"], balances["held"]) == (10_000 - captured, 0)


def test_a_hold_expires_within_five_seconds_and_publishes_hold_expired(
    client: Client, events: EventLog, beat: Any, new_id: Any
) -> None:
    account = _fund(client, new_id, 1_000)
    hold_id = new_id("h")
    created = client.run(
        "holds", {"operation_id": hold_id, "account_id": account, "amount": 400, "expires_in": 1}
    )
    assert created["balances"][account]["available"] == 600

    def expired() -> bool:
        items = client.get(f"/v1/accounts/{account}/holds").json()["items"]
        return bool(items[0]["status"] == "expired")

    wait_until(expired, 15, "the hold to expire")
    (listed,) = client.get(f"/v1/accounts/{account}/holds").json()["items"]
    assert listed["remaining"] == 0 and listed["captured"] == 0
    expires_at = datetime.fromisoformat(listed["expires_at"])
    seen = events.wait_for([f"@expiry:{hold_id}"], timeout_s=15)
    (event,) = seen[f"@expiry:{hold_id}"]
    assert event["routing_key"] == "hold.expired"
    assert event["body"]["hold_id"] == hold_id
    assert event["body"]["status"] == "expired"
    assert event["body"]["schema_version"] == 1
    entries = client.get(f"/v1/accounts/{account}/entries").json()["items"]
    assert (entries[0]["type"], entries[0]["bucket"], entries[0]["amount"]) == (
        "expiry",
        "held",
        -400,
    )
    expired_at = datetime.fromisoformat(entries[0]["created_at"])
    assert (expired_at - expires_at).total_seconds() < 5
    assert client.account(account)["available"] == 1_000


def test_captures_racing_the_expiry_leave_exactly_one_terminal_state(
    client: Client, events: EventLog, beat: Any, new_id: Any
) -> None:
    account = _fund(client, new_id, 1_000)
    hold_ids = [new_id(f"h{i}") for i in range(6)]
    for hold_id in hold_ids:
        client.submit(
            "holds",
            {"operation_id": hold_id, "account_id": account, "amount": 100, "expires_in": 1},
        )
    for hold_id in hold_ids:
        assert client.wait(hold_id)["status"] == "succeeded"
    time.sleep(0.7)
    captures = [
        (f"holds/{hold_id}/capture", {"operation_id": new_id(f"c{i}")})
        for i, hold_id in enumerate(hold_ids)
    ]
    _submit_at_once(client, captures)
    outcomes = [client.wait(body["operation_id"]) for _, body in captures]
    wait_until(
        lambda: all(
            h["status"] != "active"
            for h in client.get(f"/v1/accounts/{account}/holds").json()["items"]
        ),
        15,
        "every hold to end",
    )
    holds = {h["hold_id"]: h for h in client.get(f"/v1/accounts/{account}/holds").json()["items"]}
    captured_total = 0
    for hold_id, outcome in zip(hold_ids, outcomes, strict=True):
        if outcome["status"] == "succeeded":
            assert holds[hold_id]["status"] == "captured"
            captured_total += 100
        else:
            assert outcome["error"]["code"] == "hold_expired"
            assert holds[hold_id]["status"] == "expired"
            assert events.wait_for([f"@expiry:{hold_id}"], timeout_s=15)
    balances = client.account(account)
    assert (balances["posted"], balances["held"]) == (1_000 - captured_total, 0)
