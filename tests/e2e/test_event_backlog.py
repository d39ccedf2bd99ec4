"""With nobody reading `billing.responses`, events wait in PostgreSQL, not in the broker.

A stack of its own whose `billing.responses` holds at most 50 events (set
through BILLING_RESPONSES_MAX_EVENTS): filled with no consumer, it refuses
further events; operations are still accepted and applied, their events
wait in the outbox, and once a consumer reads again every event arrives.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kombu import Connection
from sqlalchemy import text

from billing.adapters.backlog import responses_depth
from billing.adapters.events import Topology
from billing.config import Settings
from tests.support import stack

BOUND = 50
# A quorum queue takes what is in flight when it fills: at most a burst more.
OVERSHOOT_MAX = 50
FILL_BATCH = 25


@pytest.fixture(scope="module")
def bounded() -> Iterator[tuple[Settings, stack.Client]]:
    settings = dataclasses.replace(stack.make_settings(), responses_max_events=BOUND)
    stack.prepare_database(settings)
    port = stack.free_port()
    # The worker starts while the API does.
    processes = [stack.start_worker(settings, "backlog", 2, wait=False)]
    try:
        processes.append(stack.start_api(settings, port))
        stack.wait_ready(processes[0])
        processes.append(stack.start_beat(settings))
        yield settings, stack.Client(f"http://127.0.0.1:{port}", settings.api_tokens[0])
    finally:
        stack.discard_all(processes)
        stack.drop_database(settings)
        stack.delete_amqp_entities(settings)


def depth(settings: Settings) -> int:
    return responses_depth(settings.broker_url, Topology(settings).responses.name, 2)


def outbox_backlog(settings: Settings) -> int:
    engine = stack.engine_for(settings)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM outbox_pending")).scalar())
    finally:
        engine.dispose()


def metric(body: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_events_wait_in_the_outbox_while_billing_responses_is_full_and_none_is_lost(
    bounded: tuple[Settings, stack.Client], new_id: Any
) -> None:
    settings, client = bounded
    account = new_id("backlog-account")
    client.create_account(account)

    def credit(operation_id: str) -> dict[str, Any]:
        return {"operation_id": operation_id, "account_id": account, "amount": 1}

    # Fill it, with nobody reading: batches until the queue holds its bound.
    submitted: list[str] = []
    while depth(settings) < BOUND:
        assert len(submitted) < 10 * BOUND, "billing.responses never filled"
        ids = [new_id(f"fill{len(submitted) + n}") for n in range(FILL_BATCH)]
        items = [{"type": "credit", **credit(i)} for i in ids]
        response = client.post("/v1/operations/batch", {"operations": items})
        assert response.status_code == 202, response.text
        submitted += ids
        for operation_id in ids:
            assert client.wait(operation_id)["status"] == "succeeded"

    # Full: operations are still accepted and applied, one request at a time.
    while_full = [new_id(f"full{n}") for n in range(2 * BOUND)]
    for operation_id in while_full:
        response = client.submit("credits", credit(operation_id))
        assert response.status_code == 202, response.text
    for operation_id in while_full:
        assert client.wait(operation_id)["status"] == "succeeded"
    submitted += while_full

    # Their events wait in PostgreSQL; the broker holds no more than its bound.
    assert outbox_backlog(settings) > 0
    assert BOUND <= depth(settings) <= BOUND + OVERSHOOT_MAX
    readiness = requests.get(f"{client.base_url}/readyz", timeout=30)
    assert readiness.status_code == 200
    assert readiness.json()["events"]["outbox_backlog"] > 0
    scrape = requests.get(f"{client.base_url}/metrics", timeout=30).text
    assert metric(scrape, "billing_outbox_backlog") > 0
    assert metric(scrape, "billing_responses_depth") >= BOUND
    assert metric(scrape, "billing_outbox_oldest_unpublished_age_seconds") > 0

    # A consumer reads again: every operation's event arrives, none is lost.
    seen: set[str] = set()

    def read_all() -> bool:
        with Connection(settings.broker_url) as connection:
            channel = connection.channel()
            queue = Topology(settings).responses.name
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                seen.add(message.properties.get("message_id"))
        return set(submitted) <= seen

    stack.wait_until(read_all, 90, "every event in billing.responses", interval_s=0.5)
    stack.wait_until(lambda: outbox_backlog(settings) == 0, 30, "an empty outbox backlog")
