"""A full `billing.responses` refuses events, and the publisher tells which it took."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from kombu import Connection, pools

from billing.adapters.backlog import responses_depth
from billing.adapters.events import EventPublisher, Topology
from billing.config import Settings
from billing.ports import Event, EventsRefused
from tests.support import stack

BOUND = 5


@pytest.fixture
def settings() -> Iterator[Settings]:
    settings = dataclasses.replace(stack.make_settings(), responses_max_events=BOUND)
    yield settings
    stack.delete_amqp_entities(settings)


def events(label: str, count: int) -> list[Event]:
    return [
        Event(f"{label}{n}", "operation.credit.succeeded", f'{{"operation_id":"{label}{n}"}}')
        for n in range(count)
    ]


def test_a_full_queue_refuses_events_and_only_those_it_took_count_as_published(
    settings: Settings,
) -> None:
    topology = Topology(settings)
    publisher = EventPublisher(
        settings.broker_url, pools.producers[Connection(settings.broker_url)], topology
    )
    published: list[Event] = []
    try:
        # A quorum queue takes a whole burst that reaches it before it is full.
        for burst in range(10):
            sent = events(f"burst{burst}-", 2 * BOUND)
            try:
                publisher.publish(sent)
            except EventsRefused as refused:
                assert len(refused.published) < len(sent)
                published += refused.published
                break
            published += sent
        else:
            pytest.fail("billing.responses never refused an event")
        assert len(published) >= BOUND
        assert responses_depth(settings.broker_url, topology.responses.name, 2) == len(published)
        assert publisher.backing_off()
    finally:
        publisher.close_connection()
    with Connection(settings.broker_url) as connection:
        channel = connection.channel()
        taken = []
        while (message := channel.basic_get(topology.responses.name, no_ack=True)) is not None:
            taken.append(message.properties["message_id"])
    assert taken == [e.message_id for e in published]
