"""`/metrics` after a few operations: their counts, by type and status, from the API and workers.

Every figure is read before and after, so a count left by another test (or a
metric that never moves) cannot make this pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, delete, func, insert, select, text

from billing.adapters import tables
from tests.support import stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api_url: str) -> Samples:
    response = requests.get(f"{api_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


ACCEPTED = "billing_operations_accepted_total"
COMPLETED = "billing_operations_completed_total"
HTTP_REQUESTS = "billing_http_requests_total"


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_count_the_operations_just_run(
    api_url: str, client: stack.Client, new_id: Any
) -> None:
    alice, bob = new_id("metrics-alice"), new_id("metrics-bob")
    client.create_account(alice)
    client.create_account(bob)
    before = scrape(api_url)

    for n in range(3):
        credit = {"operation_id": new_id(f"m-credit-{n}"), "account_id": alice, "amount": 1000}
        assert client.run("credits", credit)["status"] == "succeeded"
    transfer = {
        "operation_id": new_id("m-transfer"),
        "source_account_id": alice,
        "destination_account_id": bob,
        "amount": 500,
    }
    assert client.run("transfers", transfer)["status"] == "succeeded"
    overdraw = {"operation_id": new_id("m-debit"), "account_id": bob, "amount": 10_000}
    outcome = client.run("debits", overdraw)
    assert outcome["error"]["code"] == "insufficient_funds", outcome
    assert client.submit("credits", credit).status_code == 200  # a retry: repeated, not accepted

    # A worker counts an operation just after committing it, so a scrape right
    # after the status turned terminal may come a moment early.
    scraped: dict[str, Samples] = {}

    def all_counted() -> bool:
        after = scraped["after"] = scrape(api_url)
        return (
            grew(before, after, COMPLETED, type="credit", status="succeeded", error_code="") >= 3
            and grew(before, after, COMPLETED, type="transfer", status="succeeded", error_code="")
            >= 1
            and grew(
                before,
                after,
                COMPLETED,
                type="debit",
                status="failed",
                error_code="insufficient_funds",
            )
            >= 1
        )

    stack.wait_until(all_counted, 20, "the workers' counts on /metrics", interval_s=0.2)
    after = scraped["after"]

    assert grew(before, after, ACCEPTED, type="credit", outcome="accepted") == 3
    assert grew(before, after, ACCEPTED, type="credit", outcome="repeated") == 1
    assert grew(before, after, ACCEPTED, type="transfer", outcome="accepted") == 1
    assert grew(before, after, ACCEPTED, type="debit", outcome="accepted") == 1
    credits, transfers = "/v1/credits", "/v1/transfers"
    assert grew(before, after, HTTP_REQUESTS, method="POST", route=credits, status="202") == 3
    assert grew(before, after, HTTP_REQUESTS, method="POST", route=credits, status="200") == 1
    assert grew(before, after, HTTP_REQUESTS, method="POST", route=transfers, status="202") == 1
    polls = "/v1/operations/<operation_id>"
    assert grew(before, after, HTTP_REQUESTS, method="GET", route=polls, status="200") >= 5
    latency = "billing_http_request_duration_seconds_count"
    assert grew(before, after, latency, method="POST", route=transfers) == 1
    waited = "billing_operation_acceptance_to_terminal_seconds_count"
    assert grew(before, after, waited, type="credit") >= 3
    ledger = "billing_ledger_task_duration_seconds_count"
    assert grew(before, after, ledger, type="transfer") >= 1
    assert grew(before, after, "billing_ledger_lock_wait_seconds_count") >= 5
    assert grew(before, after, "billing_ledger_locks_held_seconds_count") >= 5


@pytest.fixture
def unpublished_events(engine: Engine, new_id: Any) -> Iterator[Any]:
    """Adds outbox rows no relay takes yet (created an hour ahead), numbered in the feed as
    a ledger transaction numbers them; at the end they count as published (removing them
    would leave a gap in the feed's numbers)."""
    event_ids: list[int] = []

    def add(count: int) -> None:
        created_at = datetime.now(UTC) + timedelta(hours=1)
        message_ids = [new_id(f"metrics-backlog-{len(event_ids) + n}") for n in range(count)]
        with engine.begin() as connection:
            added = connection.execute(
                text(
                    "WITH c AS (UPDATE event_seq_counter SET last_seq = last_seq + :n "
                    "RETURNING last_seq - :n AS base) "
                    "INSERT INTO outbox (message_id, routing_key, body, created_at, event_seq) "
                    "SELECT m.id, 'test.backlog', '{}', :at, c.base + m.n FROM c, "
                    "unnest(CAST(:ids AS varchar[])) WITH ORDINALITY AS m(id, n) "
                    "RETURNING event_id"
                ),
                {"n": count, "at": created_at, "ids": message_ids},
            )
            event_ids.extend(added.scalars())
            connection.execute(
                insert(tables.outbox_pending), [{"event_id": e} for e in event_ids[-count:]]
            )

    yield add
    with engine.begin() as connection:
        pending = tables.outbox_pending
        connection.execute(delete(pending).where(pending.c.event_id.in_(event_ids)))


def backlog(api_url: str, engine: Engine) -> float:
    """The gauge, once it equals the database's count taken just before and just after it."""
    query = select(func.count()).select_from(tables.outbox_pending)
    readings: dict[str, float] = {}

    def steady() -> bool:
        with engine.connect() as connection:
            first = connection.execute(query).scalar_one()
            gauge = value(scrape(api_url), "billing_outbox_backlog")
            last = connection.execute(query).scalar_one()
        readings["gauge"] = gauge
        return not math.isnan(gauge) and first == gauge == last

    stack.wait_until(steady, 20, "a steady outbox backlog", interval_s=0.2)
    return readings["gauge"]


def test_the_outbox_backlog_gauge_counts_unpublished_events(
    api_url: str, engine: Engine, unpublished_events: Any
) -> None:
    before = backlog(api_url, engine)
    unpublished_events(3)
    assert backlog(api_url, engine) == before + 3
