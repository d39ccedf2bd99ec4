"""`billing.responses` is a bounded quorum queue; one an older release declared still works."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import amqp.exceptions
import pytest
from kombu import Connection, pools

from billing.adapters.events import EventPublisher, Topology, responses_arguments
from billing.config import Settings
from billing.ports import Event
from tests.support import stack


@pytest.fixture
def settings() -> Iterator[Settings]:
    settings = stack.make_settings()
    yield settings
    stack.delete_amqp_entities(settings)


QUORUM = {"x-queue-type": "quorum"}


def takes_declaration(connection: Connection, queue: str, arguments: dict[str, Any] | None) -> bool:
    """Whether the broker takes a declaration of `queue` with `arguments` (406 otherwise)."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue, durable=True, auto_delete=False, arguments=arguments)
        return True
    except amqp.exceptions.PreconditionFailed:
        return False
    finally:
        if channel.is_open:
            channel.close()


def publish_and_count(settings: Settings, topology: Topology) -> int:
    publisher = EventPublisher(
        settings.broker_url, pools.producers[Connection(settings.broker_url)], topology
    )
    try:
        publisher.publish([Event("e1", "operation.credit.succeeded", '{"operation_id":"e1"}')])
    finally:
        publisher.close_connection()
    with Connection(settings.broker_url) as connection:
        return int(connection.channel().queue_declare(topology.responses.name, passive=True)[1])


def test_a_new_deployment_declares_the_responses_queue_as_a_quorum_queue(
    settings: Settings,
) -> None:
    topology = Topology(settings)
    with Connection(settings.broker_url) as connection:
        topology.declare(connection)
        assert takes_declaration(connection, topology.responses.name, responses_arguments(settings))
    assert publish_and_count(settings, topology) == 1


@pytest.mark.parametrize(
    "arguments",
    [None, {"x-queue-version": 2}, QUORUM],
    ids=["classic version 1", "classic version 2", "quorum without a bound"],
)
def test_a_responses_queue_an_older_release_declared_is_kept_and_still_gets_events(
    settings: Settings, arguments: dict[str, Any] | None
) -> None:
    topology = Topology(settings)
    with Connection(settings.broker_url) as connection:
        # As older releases declared it (and not bound yet).
        connection.channel().queue_declare(
            topology.responses.name, durable=True, auto_delete=False, arguments=arguments
        )
        topology.declare(connection)
        assert takes_declaration(connection, topology.responses.name, arguments)
        assert not takes_declaration(
            connection, topology.responses.name, responses_arguments(settings)
        )
    assert publish_and_count(settings, topology) == 1


def test_an_older_releases_queue_deleted_under_a_publisher_comes_back_as_a_quorum_queue(
    settings: Settings,
) -> None:
    topology = Topology(settings)
    publisher = EventPublisher(
        settings.broker_url, pools.producers[Connection(settings.broker_url)], topology
    )
    with Connection(settings.broker_url) as connection:
        connection.channel().queue_declare(topology.responses.name, durable=True, auto_delete=False)
    try:
        publisher.publish([Event("e1", "operation.credit.succeeded", '{"operation_id":"e1"}')])
        with Connection(settings.broker_url) as connection:
            connection.channel().queue_delete(topology.responses.name)
        # Its passive declaration fails the burst; the new connection makes the queue.
        publisher.publish([Event("e2", "operation.credit.succeeded", '{"operation_id":"e2"}')])
    finally:
        publisher.close_connection()
    with Connection(settings.broker_url) as connection:
        assert takes_declaration(connection, topology.responses.name, responses_arguments(settings))
        assert connection.channel().queue_declare(topology.responses.name, passive=True)[1] == 1


def test_a_publisher_declares_the_events_exchange_again_after_an_operator_deleted_it(
    settings: Settings,
) -> None:
    topology = Topology(settings)
    publisher = EventPublisher(
        settings.broker_url, pools.producers[Connection(settings.broker_url)], topology
    )
    try:
        publisher.publish([Event("e1", "operation.credit.succeeded", '{"operation_id":"e1"}')])
        with Connection(settings.broker_url) as connection:
            connection.channel().exchange_delete(topology.events.name)
        publisher.publish([Event("e2", "operation.credit.succeeded", '{"operation_id":"e2"}')])
    finally:
        publisher.close_connection()
    with Connection(settings.broker_url) as connection:
        assert connection.channel().queue_declare(topology.responses.name, passive=True)[1] == 2
