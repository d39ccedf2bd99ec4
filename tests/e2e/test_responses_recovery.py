"""Every event reaches `billing.responses`, even after an operator deleted or unbound it.

The test reads the queue without declaring it (a declaration would make the
queue again and hide the fault): only the service may bring it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import amqp.exceptions
import pytest
from kombu import Connection, Queue

from billing.adapters.events import Topology
from billing.config import Settings
from tests.support.stack import Client, wait_until

OPERATIONS_PER_PHASE = 30


class QueueReader:
    """Takes what waits in a queue, by message_id, as long as the queue exists."""

    def __init__(self, settings: Settings, queue: str) -> None:
        self._settings = settings
        self._queue = queue
        self.seen: set[str] = set()

    def take(self) -> bool:
        """Take every waiting event; False while the queue does not exist."""
        with Connection(self._settings.broker_url) as connection:
            channel = connection.channel()
            try:
                channel.queue_declare(self._queue, passive=True)
            except amqp.exceptions.NotFound:
                return False
            while (message := channel.basic_get(self._queue, no_ack=True)) is not None:
                self.seen.add(message.properties.get("message_id"))
        return True

    def missing(self, message_ids: list[str], timeout_s: float = 30) -> list[str]:
        """Which of the events never reached the queue, waiting for them up to `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: self.take() and set(message_ids) <= self.seen,
                timeout_s,
                "events in billing.responses",
                interval_s=0.1,
            )
        return [m for m in message_ids if m not in self.seen]


def break_and_run(client: Client, new_id: Any, fault: Callable[[], None], label: str) -> list[str]:
    """Credits in flight, then the fault, then more credits; the ids of those sent after it.

    Every id sent after the fault completes after it, so its event is
    published after it.
    """
    account = new_id(f"{label}-account")
    client.create_account(account)

    def submit(phase: str) -> list[str]:
        ids = [new_id(f"{label}-{phase}{n}") for n in range(OPERATIONS_PER_PHASE)]
        for operation_id in ids:
            body = {"operation_id": operation_id, "account_id": account, "amount": 1}
            response = client.submit("credits", body)
            assert response.status_code == 202, response.text
        return ids

    before = submit("before")
    fault()
    after = submit("after")
    for operation_id in before + after:
        assert client.wait(operation_id)["status"] == "succeeded"
    return after


@pytest.fixture
def responses(settings: Settings, client: Client) -> QueueReader:
    reader = QueueReader(settings, Topology(settings).responses.name)
    reader.take()  # what earlier tests left there
    return reader


def delete_responses(settings: Settings) -> None:
    with Connection(settings.broker_url) as connection:
        connection.channel().queue_delete(Topology(settings).responses.name)


def test_events_reach_billing_responses_after_an_operator_deleted_it(
    settings: Settings, client: Client, responses: QueueReader, new_id: Any
) -> None:
    after = break_and_run(client, new_id, lambda: delete_responses(settings), "deleted")
    assert responses.missing(after) == []


def test_events_reach_billing_responses_after_an_operator_unbound_it(
    settings: Settings, client: Client, responses: QueueReader, new_id: Any
) -> None:
    topology = Topology(settings)

    def unbind() -> None:
        with Connection(settings.broker_url) as connection:
            connection.channel().queue_unbind(
                topology.responses.name, topology.events.name, routing_key="#"
            )

    after = break_and_run(client, new_id, unbind, "unbound")
    assert responses.missing(after) == []


@pytest.fixture
def own_queue(settings: Settings) -> Iterator[QueueReader]:
    """A client's own queue bound to `billing.events` with `#`, next to `billing.responses`."""
    topology = Topology(settings)
    name = settings.amqp_name("test.own-events")
    with Connection(settings.broker_url) as connection:
        Queue(name, exchange=topology.events, routing_key="#", durable=False).bind(
            connection.channel()
        ).declare()
    yield QueueReader(settings, name)
    with Connection(settings.broker_url) as connection:
        connection.channel().queue_delete(name)


def test_events_reach_billing_responses_after_it_was_deleted_while_a_client_queue_is_bound(
    settings: Settings,
    client: Client,
    responses: QueueReader,
    own_queue: QueueReader,
    new_id: Any,
) -> None:
    # The client's queue routes every event, so the broker returns none of
    # them: only declaring billing.responses again brings it back.
    after = break_and_run(client, new_id, lambda: delete_responses(settings), "beside")
    assert own_queue.missing(after) == []
    assert responses.missing(after) == []
