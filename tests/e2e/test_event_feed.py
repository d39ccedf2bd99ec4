"""GET /v1/events: read page by page while workers apply thousands of operations, miss nothing."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.stack import Client, wait_until

ACCOUNTS = 30
BATCHES = 8
BATCH_SIZE = 500
PAGE = 100


def last_seq(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT last_seq FROM event_seq_counter")).scalar_one())


def count(engine: Any, statement: str, prefix: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(statement), {"prefix": prefix + "%"}).scalar_one())


class FeedReader(threading.Thread):
    """Reads the feed over HTTP page after page, from `after`, until told where to stop."""

    def __init__(self, client: Client, after: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.after = after
        self.items: list[dict[str, Any]] = []
        self.stop_at: int | None = None
        self.pages = 0
        self.failure: str | None = None

    def run(self) -> None:
        while self.stop_at is None or self.after < self.stop_at:
            response = self.client.get("/v1/events", params={"after": self.after, "limit": PAGE})
            if response.status_code != 200:
                self.failure = f"{response.status_code} {response.text[:300]}"
                return
            page = response.json()
            self.items += page["items"]
            self.pages += 1
            self.after = page["next_after"]
            if not page["items"]:
                time.sleep(0.05)  # at the end for now: leave the machine to the workers


def test_a_reader_paging_through_the_feed_during_thousands_of_operations_sees_each_event_once(
    client: Client, engine: Any, new_id: Any, metrics: dict[str, str]
) -> None:
    rng = random.Random(20261206)
    prefix = new_id("feed")
    accounts = [f"{prefix}-acct{i:02d}" for i in range(ACCOUNTS)]
    for account in accounts:
        client.create_account(account)
    start = last_seq(engine)
    reader = FeedReader(client, start)
    reader.start()

    def operation(n: int) -> dict[str, Any]:
        kind = rng.choice(["transfer", "transfer", "credit", "debit"])
        body: dict[str, Any] = {"type": kind, "operation_id": f"{prefix}-op{n:05d}"}
        if kind == "transfer":
            source, destination = rng.sample(accounts, 2)
            body |= {"source_account_id": source, "destination_account_id": destination}
        else:
            body["account_id"] = rng.choice(accounts)
        return body | {"amount": rng.randint(1, 500)}

    batches = [[operation(b * BATCH_SIZE + i) for i in range(BATCH_SIZE)] for b in range(BATCHES)]

    def send(batch: list[dict[str, Any]]) -> int:
        return client.post("/v1/operations/batch", {"operations": batch}).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(send, batches)) == [202] * BATCHES
    wait_until(
        lambda: (
            count(
                engine,
                "SELECT count(*) FROM operations WHERE operation_id LIKE :prefix "
                "AND status = 'pending'",
                prefix,
            )
            == 0
        ),
        120,
        "every operation to end",
    )
    # Each event is numbered right after its transaction, before it is published.
    wait_until(
        lambda: (
            count(
                engine,
                "SELECT count(*) FROM outbox WHERE message_id LIKE :prefix AND event_seq IS NULL",
                prefix,
            )
            == 0
        ),
        60,
        "every event to be numbered",
    )
    end = last_seq(engine)
    reader.stop_at = end
    reader.join(timeout=120)
    assert reader.failure is None, reader.failure
    assert not reader.is_alive()

    seqs = [item["event_seq"] for item in reader.items]
    assert seqs == list(range(start + 1, end + 1)), "every number once, in order, none skipped"
    for item in reader.items:
        assert item["body"]["event_seq"] == item["event_seq"]
    with engine.connect() as connection:
        recorded = connection.execute(
            text(
                "SELECT event_seq, message_id FROM outbox "
                "WHERE event_seq > :start AND event_seq <= :end ORDER BY event_seq"
            ),
            {"start": start, "end": end},
        ).all()
        terminal = set(
            connection.execute(
                text("SELECT operation_id FROM operations WHERE operation_id LIKE :prefix"),
                {"prefix": f"{prefix}-op%"},
            ).scalars()
        )
    assert [(item["event_seq"], item["message_id"]) for item in reader.items] == [
        tuple(row) for row in recorded
    ]
    ours = [item["message_id"] for item in reader.items if item["message_id"] in terminal]
    assert sorted(ours) == sorted(terminal) and len(terminal) == BATCHES * BATCH_SIZE
    metrics["feed: pages read while applying"] = f"{reader.pages} pages, {len(seqs)} events"


@pytest.mark.parametrize(
    "query",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"after": "1.5"},
        {"limit": "0"},
        {"limit": "501"},
        {"cursor": "1"},
    ],
)
def test_a_bad_page_of_the_feed_is_refused_naming_the_parameter(
    client: Client, query: dict[str, str]
) -> None:
    response = client.get("/v1/events", params=query)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == set(query)


def test_after_beyond_the_last_event_is_refused(client: Client, engine: Any) -> None:
    response = client.get("/v1/events", params={"after": last_seq(engine) + 1_000_000})
    assert response.status_code == 422
    assert "after" in response.json()["error"]["details"]


def test_the_feed_needs_the_token(client: Client) -> None:
    response = client.session.get(
        client.base_url + "/v1/events", headers={"Authorization": "Bearer wrong"}, timeout=10
    )
    assert response.status_code == 401
