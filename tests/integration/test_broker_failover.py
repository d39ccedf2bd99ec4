"""Several broker URLs (`;`): connections go to the first node that answers, each tried in order.

The shared broker is the live node; the dead ones are ports nothing listens
on, so a connection attempt is refused at once, as it is by a killed node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from kombu import Connection, pools

from billing.adapters.amqp_internals import BufferedTcpTransport, blocking_reader
from billing.adapters.dead_letters import list_dead_letters
from billing.adapters.events import EventPublisher, Topology
from billing.config import Settings
from billing.ports import Event
from tests.support import stack


def dead_node() -> str:
    return f"amqp://guest:guest@127.0.0.1:{stack.free_port()}//"


@pytest.fixture
def settings() -> Iterator[Settings]:
    settings = stack.make_settings()
    yield settings
    stack.delete_amqp_entities(settings)


def test_a_blocking_reader_skips_every_dead_node_and_keeps_its_buffered_reads(
    settings: Settings,
) -> None:
    urls = f"{dead_node()};{dead_node()};{settings.broker_url}"
    with blocking_reader(urls, connect_timeout=2) as connection:
        assert connection.port == int(settings.broker_url.rsplit(":", 1)[1].split("/")[0])
        assert isinstance(connection.connection.transport, BufferedTcpTransport)
        connection.channel().close()


def test_events_are_published_through_the_first_live_node_of_the_list(
    settings: Settings,
) -> None:
    cluster = replace(settings, broker_url=f"{dead_node()};{dead_node()};{settings.broker_url}")
    topology = Topology(cluster)
    publisher = EventPublisher(
        cluster.broker_url, pools.producers[Connection(cluster.broker_url)], topology
    )
    try:
        body = json.dumps({"operation_id": "e1"})
        publisher.publish([Event("e1", "operation.credit.succeeded", body)])
    finally:
        publisher.close_connection()
    with Connection(settings.broker_url) as connection:
        assert connection.channel().queue_declare(topology.responses.name, passive=True)[1] == 1


def test_the_dead_letter_commands_reach_the_broker_past_dead_nodes(settings: Settings) -> None:
    with Connection(settings.broker_url) as connection:
        Topology(settings).declare(connection)
    cluster = replace(settings, broker_url=f"{dead_node()};{dead_node()};{settings.broker_url}")
    depth, letters = list_dead_letters(cluster, "tasks", limit=10, ids=())
    assert (depth, letters) == (0, [])
