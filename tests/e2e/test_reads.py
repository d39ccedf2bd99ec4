"""Reading the ledger over HTTP: operations by filter, accounts, balances at a moment, pages."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from api import bodies
from tests.support.contract import assert_error
from tests.support.stack import Client


def pages(client: Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page after page, checking that no page is empty but the last."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], page


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["operation_id"] for item in items]


def test_an_accounts_operations_are_every_operation_that_involves_it_newest_first(
    client: Client, new_id: Any
) -> None:
    a, b, c = (client.create_account(new_id(name))["account_id"] for name in "abc")
    ran = {}

    def run(name: str, kind: str, body: dict[str, Any]) -> None:
        ran[name] = client.run(kind, {"operation_id": new_id(name), **body})

    run("credit", "credits", {"account_id": a, "amount": 1000})
    run("fund-c", "credits", {"account_id": c, "amount": 1000})
    run("to-b", "transfers", {"source_account_id": a, "destination_account_id": b, "amount": 100})
    run("from-c", "transfers", {"source_account_id": c, "destination_account_id": a, "amount": 50})
    run("too-much", "debits", {"account_id": a, "amount": 10**9})
    run("hold", "holds", {"account_id": a, "amount": 70, "destination_account_id": b})
    run("pays-a", "holds", {"account_id": c, "amount": 20, "destination_account_id": a})
    run("capture", f"holds/{new_id('hold')}/capture", {"amount": 30, "final": False})
    run("release", f"holds/{new_id('pays-a')}/release", {})
    run("release-again", f"holds/{new_id('pays-a')}/release", {})
    assert ran["too-much"]["status"] == "failed"
    assert ran["release-again"]["status"] == "failed"
    involving_a = {
        "credit", "to-b", "from-c", "too-much", "hold", "pays-a", "capture", "release",
        "release-again",
    }  # fmt: skip
    listed = pages(client, "/v1/operations", account_id=a, limit=2)
    assert len(ids(listed)) == len(involving_a)
    assert set(ids(listed)) == {new_id(n) for n in involving_a}
    keys = [(item["accepted_at"], item["operation_id"]) for item in listed]
    assert keys == sorted(keys, reverse=True)
    # Each item is the operation's representation, as GET /v1/operations/{id} has it.
    assert listed[ids(listed).index(new_id("to-b"))] == client.wait(new_id("to-b"))
    b_ids = set(ids(pages(client, "/v1/operations", account_id=b)))
    assert b_ids == {new_id(n) for n in ("to-b", "hold", "capture")}

    def found(**params: Any) -> set[str]:
        return set(ids(pages(client, "/v1/operations", account_id=a, **params)))

    assert found(type="transfer") == {new_id("to-b"), new_id("from-c")}
    assert found(status="failed") == {new_id("too-much"), new_id("release-again")}
    assert found(type="release", status="succeeded") == {new_id("release")}
    middle = ran["from-c"]["accepted_at"]
    assert found(until=middle) == {new_id("credit"), new_id("to-b")}
    assert found(since=middle, until=ran["hold"]["accepted_at"]) == {
        new_id("from-c"),
        new_id("too-much"),
    }
    everything = pages(client, "/v1/operations", since=ran["credit"]["accepted_at"], limit=500)
    assert {new_id(n) for n in ran} <= set(ids(everything))


def test_operation_pages_neither_repeat_nor_skip_while_operations_are_applied(
    client: Client, new_id: Any
) -> None:
    account = client.create_account(new_id("busy"))["account_id"]
    body = {"operations": [
        {"type": "credit", "operation_id": new_id(f"before-{i}"), "account_id": account,
         "amount": 1} for i in range(60)
    ]}  # fmt: skip
    assert client.post("/v1/operations/batch", body).status_code == 202
    stop = threading.Event()

    def write() -> None:
        with requests.Session() as session:
            session.headers.update(client.session.headers)
            n = 0
            while not stop.is_set():
                n += 1
                session.post(
                    client.base_url + "/v1/credits",
                    json={
                        "operation_id": new_id(f"during-{n}"),
                        "account_id": account,
                        "amount": 1,
                    },
                    timeout=30,
                )

    writer = threading.Thread(target=write)
    writer.start()
    try:
        listed = ids(pages(client, "/v1/operations", account_id=account, limit=7))
    finally:
        stop.set()
        writer.join()
    assert len(listed) == len(set(listed))
    assert {new_id(f"before-{i}") for i in range(60)} <= set(listed)


def test_accounts_are_listed_by_id_without_the_external_ones(client: Client, new_id: Any) -> None:
    mine = sorted(client.create_account(new_id(f"x{i}"), "XTS")["account_id"] for i in range(5))
    listed = pages(client, "/v1/accounts", currency="XTS", limit=2)
    account_ids = [a["account_id"] for a in listed]
    assert account_ids == sorted(account_ids)
    assert [a for a in account_ids if a in mine] == mine
    assert {a["currency"] for a in listed} == {"XTS"}
    assert listed[account_ids.index(mine[0])] == client.account(mine[0])
    every = [a["account_id"] for a in pages(client, "/v1/accounts", limit=500)]
    assert set(mine) <= set(every)
    assert not [a for a in every if a.startswith("@")]


def at(moment: str, shift_us: int = 0) -> str:
    return (datetime.fromisoformat(moment) + timedelta(microseconds=shift_us)).isoformat()


def test_balances_at_a_moment_are_the_figures_after_every_entry_at_or_before_it(
    client: Client, new_id: Any
) -> None:
    account = client.create_account(new_id("alice"))
    account_id = account["account_id"]
    credit = client.run("credits", {"operation_id": new_id("c"), "account_id": account_id,
                                    "amount": 500})  # fmt: skip
    hold = client.run("holds", {"operation_id": new_id("h"), "account_id": account_id,
                                "amount": 200})  # fmt: skip

    def balances(moment: str) -> tuple[int, int, int]:
        response = client.get(f"/v1/accounts/{account_id}/balances", params={"at": moment})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"account_id", "posted", "held", "available", "at"}
        assert datetime.fromisoformat(body["at"]) == datetime.fromisoformat(moment)
        return body["posted"], body["held"], body["available"]

    assert balances(at(account["created_at"], -1)) == (0, 0, 0)
    assert balances(at(credit["completed_at"], -1)) == (0, 0, 0)
    assert balances(credit["completed_at"]) == (500, 0, 500)
    assert balances(at(hold["completed_at"], -1)) == (500, 0, 500)
    assert balances(hold["completed_at"]) == (500, 200, 300)
    assert balances(datetime.now(UTC).isoformat()) == (500, 200, 300)


def test_balances_at_every_moment_of_a_busy_account_match_its_entries(
    client: Client, new_id: Any
) -> None:
    """Transfers applied by several workers at once: the figures at each entry's moment are
    the sum of the entries at or before it, so no moment mixes two orders."""
    hub = client.create_account(new_id("hub"))["account_id"]
    spokes = [client.create_account(new_id(f"s{i}"))["account_id"] for i in range(8)]
    funding = [
        {"type": "credit", "operation_id": new_id(f"f{i}"), "account_id": s, "amount": 1000}
        for i, s in enumerate([hub, *spokes])
    ]
    transfers = [
        {"type": "transfer", "operation_id": new_id(f"t{i}"), "amount": i + 1,
         "source_account_id": spokes[i % 8] if i % 3 else hub,
         "destination_account_id": hub if i % 3 else spokes[i % 8]}
        for i in range(48)
    ]  # fmt: skip
    assert client.post("/v1/operations/batch", {"operations": funding}).status_code == 202
    client.wait(new_id("f0"))
    for chunk in range(0, 48, 4):  # many small requests: many ledger transactions at once
        body = {"operations": transfers[chunk : chunk + 4]}
        assert client.post("/v1/operations/batch", body).status_code == 202
    for transfer in transfers:
        client.wait(transfer["operation_id"])
    entries = pages(client, f"/v1/accounts/{hub}/entries", limit=500)
    for moment in sorted({e["created_at"] for e in entries}):
        posted = sum(e["amount"] for e in entries if e["created_at"] <= moment)
        response = client.get(f"/v1/accounts/{hub}/balances", params={"at": moment})
        assert response.json()["posted"] == posted, (moment, response.text)


def test_bad_filters_cursors_and_moments_are_refused(client: Client, new_id: Any) -> None:
    account_id = client.create_account(new_id("alice"))["account_id"]
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    refused = [
        ("/v1/operations", {"type": "refund"}, "type"),
        ("/v1/operations", {"status": "done"}, "status"),
        ("/v1/operations", {"account_id": "not valid!"}, "account_id"),
        ("/v1/operations", {"since": "2026-01-01T00:00:00"}, "since"),
        ("/v1/operations", {"since": "yesterday"}, "since"),
        ("/v1/operations", {"until": "2026-02-30T00:00:00Z"}, "until"),
        (
            "/v1/operations",
            {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "until",
        ),
        ("/v1/operations", {"limit": "0"}, "limit"),
        ("/v1/operations", {"limit": "501"}, "limit"),
        ("/v1/operations", {"limit": "ten"}, "limit"),
        ("/v1/operations", {"cursor": "garbage"}, "cursor"),
        ("/v1/operations", {"cursor": "17:bad id!"}, "cursor"),
        ("/v1/operations", {"cursor": "9" * 19 + ":op-1"}, "cursor"),
        ("/v1/operations", {"cursor": "1" * 2000}, "cursor"),
        ("/v1/operations", {"accountid": account_id}, "accountid"),
        ("/v1/accounts", {"currency": "usd"}, "currency"),
        ("/v1/accounts", {"cursor": "@external:USD"}, "cursor"),
        ("/v1/accounts", {"cursor": "x" * 65}, "cursor"),
        ("/v1/accounts", {"limit": "-1"}, "limit"),
        (f"/v1/accounts/{account_id}/balances", {}, "at"),
        (f"/v1/accounts/{account_id}/balances", {"at": future}, "at"),
        (f"/v1/accounts/{account_id}/balances", {"at": "2026-01-01T00:00:00"}, "at"),
        (f"/v1/accounts/{account_id}/balances", {"at": "2026-01-01"}, "at"),
        (f"/v1/accounts/{account_id}/balances", {"at": "20260101T000000Z"}, "at"),
        (f"/v1/accounts/{account_id}/balances", {"at": "2026-01-01T00:00:00+25:00"}, "at"),
    ]
    for path, params, field in refused:
        assert_error(client.get(path, params=params), 422, "validation_error", field)
    a_moment = {"at": "2026-01-01T00:00:00Z"}
    assert_error(client.get(f"/v1/accounts/{new_id('nobody')}/balances", params=a_moment),
                 404, "not_found")  # fmt: skip
    assert_error(client.get("/v1/accounts/@external:USD/balances", params=a_moment),
                 422, "validation_error", "account_id")  # fmt: skip
    for path in ("/v1/operations", "/v1/accounts", f"/v1/accounts/{account_id}/balances"):
        response = requests.get(client.base_url + path, params=a_moment, timeout=30)
        assert_error(response, 401, "unauthorized")


def test_the_openapi_document_shows_the_reads_with_their_parameters(client: Client) -> None:
    document = client.get("/openapi.json").json()
    expected = {
        "/v1/operations": {"account_id", "type", "status", "since", "until", "limit", "cursor"},
        "/v1/accounts": {"currency", "limit", "cursor"},
        "/v1/accounts/{account_id}/balances": {"at"},
    }
    for path, names in expected.items():
        operation = document["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} >= names, path
        assert operation["security"] == [{"bearer": []}]
        assert "422" in operation["responses"]
    type_filter = next(
        p for p in document["paths"]["/v1/operations"]["get"]["parameters"] if p["name"] == "type"
    )
    assert "transfer" in type_filter["schema"]["enum"]


def test_a_query_parameter_given_twice_is_refused(client: Client, new_id: Any) -> None:
    """Not read as its first value: `type=transfer&type=credit` would list transfers only."""
    account_id = client.create_account(new_id("alice"))["account_id"]
    operation_id = client.run("credits", {"operation_id": new_id("c"), "account_id": account_id,
                                          "amount": 5})["operation_id"]  # fmt: skip
    moment = "2026-01-01T00:00:00Z"
    twice = [
        ("/v1/operations", {"type": ["transfer", "credit"]}, "type"),
        ("/v1/operations", {"account_id": [account_id, account_id]}, "account_id"),
        ("/v1/accounts", {"limit": ["1", "2"]}, "limit"),
        (f"/v1/accounts/{account_id}/entries", {"cursor": ["1", "2"]}, "cursor"),
        (f"/v1/accounts/{account_id}/holds", {"limit": ["5", "5"]}, "limit"),
        (f"/v1/accounts/{account_id}/balances", {"at": [moment, moment]}, "at"),
        (f"/v1/operations/{operation_id}", {"wait": ["0", "1"]}, "wait"),
        ("/v1/events", {"after": ["0", "0"]}, "after"),
    ]
    for path, params, field in twice:
        response = client.get(path, params=params)
        assert_error(response, 422, "validation_error", field)
        assert response.json()["error"]["details"][field] == [bodies.REPEATED_MESSAGE]
        once = {name: values[0] for name, values in params.items()}
        assert client.get(path, params=once).status_code == 200, (path, once)
