"""The client's requests, without a network: metadata on every operation, moments, pages, the feed.

A `requests.Session` whose `request` answers from a script stands in for
the API, so each test sees exactly what the client would send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from billing_client import Client, EventsPrunedError

ACCEPTED = {
    "operation_id": "op-1",
    "type": "credit",
    "status": "pending",
    "request": {},
    "error": None,
    "accepted_at": "2026-11-24T18:00:00+00:00",
    "completed_at": None,
    "metadata": {},
}


class ScriptedSession(requests.Session):
    """Answers each request with the next (status, body) of `answers`, recording what was sent."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        super().__init__()
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> Any:  # type: ignore[override]
        self.sent.append({"method": method, "url": url, **kwargs})
        status, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        return response

    def params_of(self, n: int) -> dict[str, Any]:
        return dict(self.sent[n]["params"])


def client_with(answers: list[tuple[int, Any]]) -> tuple[Client, ScriptedSession]:
    session = ScriptedSession(answers)
    return Client("http://billing.invalid", "token", session=session), session


OPERATIONS: dict[str, Callable[[Client, Any], Any]] = {
    "credit": lambda c, m: c.credit("a", 1, metadata=m),
    "debit": lambda c, m: c.debit("a", 1, metadata=m),
    "transfer": lambda c, m: c.transfer("a", "b", 1, metadata=m),
    "hold": lambda c, m: c.hold("a", 1, metadata=m),
    "capture": lambda c, m: c.capture("h-1", metadata=m),
    "release": lambda c, m: c.release("h-1", metadata=m),
    "reverse": lambda c, m: c.reverse("t-1", metadata=m),
}


@pytest.mark.parametrize("kind", OPERATIONS)
def test_every_operation_sends_its_metadata_and_none_when_not_given(kind: str) -> None:
    client, session = client_with([(202, ACCEPTED), (202, ACCEPTED)])
    OPERATIONS[kind](client, {"order": 7})
    OPERATIONS[kind](client, None)
    assert session.sent[0]["json"]["metadata"] == {"order": 7}
    assert "metadata" not in session.sent[1]["json"]


@pytest.mark.parametrize(
    "read",
    [
        lambda c: c.balances_at("a", datetime(2026, 11, 24, 18)),
        lambda c: c.operations(since=datetime(2026, 11, 24)),
        lambda c: c.operations(until=datetime(2026, 11, 24)),
    ],
    ids=["balances_at", "since", "until"],
)
def test_a_naive_datetime_is_refused_before_any_request(read: Callable[[Client], Any]) -> None:
    client, session = client_with([])
    with pytest.raises(ValueError, match="aware datetime"):
        read(client)
    assert session.sent == []


def test_a_moment_that_is_not_a_datetime_is_refused() -> None:
    client, session = client_with([])
    with pytest.raises(TypeError, match="at must be a datetime"):
        client.balances_at("a", "2026-11-24T18:00:00Z")  # type: ignore[arg-type]
    assert session.sent == []


def test_balances_at_sends_the_moment_in_utc_and_reads_the_answer() -> None:
    answer = {
        "account_id": "a",
        "posted": 5,
        "held": 0,
        "available": 5,
        "at": "2026-11-24T13:00:00Z",
    }
    client, session = client_with([(200, answer)])
    at = datetime(2026, 11, 24, 18, 0, tzinfo=timezone(timedelta(hours=5)))
    balances = client.balances_at("a", at)
    assert session.sent[0]["url"] == "http://billing.invalid/v1/accounts/a/balances"
    assert session.params_of(0) == {"at": "2026-11-24T13:00:00+00:00"}
    assert balances.posted == 5 and balances.at == at


def page(items: list[Any], next_cursor: str | None) -> tuple[int, dict[str, Any]]:
    return 200, {"items": items, "next_cursor": next_cursor}


def test_operations_are_read_lazily_page_after_page_with_only_the_filters_given() -> None:
    first = [{**ACCEPTED, "operation_id": "op-2"}, {**ACCEPTED, "operation_id": "op-1"}]
    client, session = client_with([page(first, "c-1"), page([ACCEPTED], None)])
    since = datetime(2026, 11, 24, tzinfo=UTC)
    found = client.operations(account_id="a", status="failed", since=since, page_size=2)
    assert session.sent == [], "no request before the iterator is read"
    assert [o.operation_id for o in found] == ["op-2", "op-1", "op-1"]
    assert session.params_of(0) == {
        "account_id": "a",
        "status": "failed",
        "since": "2026-11-24T00:00:00+00:00",
        "limit": 2,
    }
    assert session.params_of(1) == {**session.params_of(0), "cursor": "c-1"}


def test_accounts_are_read_by_currency_across_pages() -> None:
    account = {
        "account_id": "a",
        "currency": "EUR",
        "posted": 0,
        "held": 0,
        "available": 0,
        "overdraft_limit": 0,
        "metadata": {},
        "created_at": "2026-11-24T18:00:00+00:00",
    }
    client, session = client_with(
        [page([account], "a"), page([{**account, "account_id": "b"}], None)]
    )
    assert [a.account_id for a in client.accounts(currency="EUR", page_size=1)] == ["a", "b"]
    assert session.sent[0]["url"] == "http://billing.invalid/v1/accounts"
    assert session.params_of(1) == {"currency": "EUR", "limit": 1, "cursor": "a"}


def feed_item(event_seq: int) -> dict[str, Any]:
    return {
        "event_seq": event_seq,
        "routing_key": "operation.credit.succeeded",
        "message_id": f"op-{event_seq}",
        "body": {**ACCEPTED, "status": "succeeded", "event_seq": event_seq},
    }


def test_the_feed_is_read_from_each_next_after_until_a_page_comes_empty() -> None:
    client, session = client_with(
        [
            (200, {"items": [feed_item(4), feed_item(5)], "next_after": 5}),
            (200, {"items": [feed_item(6)], "next_after": 6}),
            (200, {"items": [], "next_after": 6}),
        ]
    )
    assert [e.event_seq for e in client.events(3, page_size=2)] == [4, 5, 6]
    assert [session.params_of(n) for n in range(3)] == [
        {"after": 3, "limit": 2},
        {"after": 5, "limit": 2},
        {"after": 6, "limit": 2},
    ]


def test_the_feed_from_the_start_asks_after_zero_in_pages_of_the_largest_size() -> None:
    client, session = client_with([(200, {"items": [], "next_after": 0})])
    assert list(client.events()) == []
    assert session.params_of(0) == {"after": 0, "limit": 500}


def test_a_feed_read_from_before_what_is_kept_raises_events_pruned_with_retained_after() -> None:
    error = {
        "error": {
            "code": "events_pruned",
            "message": "the events after 0 are no longer kept; the feed is kept from after=1200",
            "details": {"retained_after": 1200},
        }
    }
    client, _ = client_with([(410, error)])
    with pytest.raises(EventsPrunedError) as raised:
        list(client.events(0))
    assert (raised.value.status, raised.value.retained_after) == (410, 1200)
