"""An event the broker returns as unroutable is not marked published; it stays in the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Queue, pools
from sqlalchemy import text

from billing import service
from billing.adapters.events import EventPublisher, Topology
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.config import Settings
from billing.ports import TransientError
from tests.support import stack


@pytest.fixture
def settings() -> Iterator[Settings]:
    settings = stack.make_settings()
    yield settings
    stack.delete_amqp_entities(settings)


def record_events(engine: Any, events: dict[str, str]) -> None:
    """Unpublished events in the outbox, by message_id and routing key."""
    with engine.begin() as connection:
        for message_id, routing_key in events.items():
            connection.execute(
                text(
                    "WITH n AS (UPDATE event_seq_counter SET last_seq = last_seq + 1 "
                    "RETURNING last_seq), e AS (INSERT INTO outbox (message_id, routing_key, "
                    "body, event_seq) SELECT :id, :key, '{}', last_seq FROM n "
                    "RETURNING event_id) INSERT INTO outbox_pending SELECT event_id FROM e"
                ),
                {"id": message_id, "key": routing_key},
            )


def pending(engine: Any) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT o.message_id FROM outbox_pending p JOIN outbox o USING (event_id) "
                "ORDER BY o.message_id"
            )
        )
        return [row[0] for row in rows]


def publisher(settings: Settings, topology: Topology) -> EventPublisher:
    producers = pools.producers[Connection(settings.broker_url)]
    return EventPublisher(settings.broker_url, producers, topology)


def taken_from(settings: Settings, queue: str) -> list[str]:
    """The message ids waiting in the queue, taken off it, in order."""
    ids = []
    with Connection(settings.broker_url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.append(message.properties["message_id"])
    return ids


def test_an_event_the_broker_returns_is_not_marked_published_and_a_later_burst_delivers_it(
    workerless_engine: Any, settings: Settings
) -> None:
    engine = workerless_engine
    record_events(engine, {"routed": "operation.credit.succeeded", "returned": "hold.expired"})
    # billing.responses bound for operations only, and no other queue: the
    # broker can route the hold.expired event nowhere, and returns it.
    narrow = Topology(settings)
    narrow.responses = Queue(
        narrow.responses.name,
        exchange=narrow.events,
        routing_key="operation.#",
        durable=True,
        queue_arguments=narrow.responses.queue_arguments,
    )
    narrow_publisher = publisher(settings, narrow)
    try:
        with pytest.raises(TransientError, match="returned 1 events as unroutable"):
            service.publish_events(["routed", "returned"], SqlUnitOfWork(engine), narrow_publisher)
    finally:
        narrow_publisher.close_connection()
    assert pending(engine) == ["returned", "routed"]
    # Only the returned event was sent again, not the burst.
    assert taken_from(settings, narrow.responses.name) == ["routed"]

    # The service's own publisher binds billing.responses with `#` again.
    full = Topology(settings)
    full_publisher = publisher(settings, full)
    try:
        assert service.relay_events(SqlUnitOfWork(engine), full_publisher, older_than_s=0) == 2
    finally:
        full_publisher.close_connection()
    assert pending(engine) == []
    assert sorted(taken_from(settings, full.responses.name)) == ["returned", "routed"]
