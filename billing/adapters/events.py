"""The AMQP topology of the service and the publisher of outcome events.

`billing.events` is a durable topic exchange; `billing.responses` is a
durable queue bound with `#`, so events are kept while nobody consumes them.
Events are persistent and published with confirms (the Celery connection's
`confirm_publish`), so a publish that returns has reached the broker.
"""

from __future__ import annotations

import json
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError as BrokerOperationalError
from kombu.pools import ProducerPool

from billing.config import Settings
from billing.ports import Event, TransientError


class Topology:
    """Every exchange and queue the service declares, named with the deployment's prefix."""

    def __init__(self, settings: Settings) -> None:
        name = settings.amqp_name
        self.events = Exchange(name("billing.events"), type="topic", durable=True)
        self.responses = Queue(
            name("billing.responses"), exchange=self.events, routing_key="#", durable=True
        )
        self.requests = Exchange(name("billing.requests"), type="direct", durable=True)
        self.requests_dead = Exchange(name("billing.requests.dead"), type="fanout", durable=True)
        self.requests_dead_queue = Queue(
            name("billing.requests.dead"),
            exchange=self.requests_dead,
            routing_key="#",
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        # Invalid requests are rejected to the dead-letter exchange; a request
        # that keeps crashing the intake is dead-lettered after the limit.
        self.requests_queue = Queue(
            name("billing.requests"),
            exchange=self.requests,
            routing_key="operation",
            durable=True,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 20,
                "x-dead-letter-exchange": self.requests_dead.name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        self.tasks_dead = Exchange(name("billing.tasks.dead"), type="fanout", durable=True)
        self.tasks_dead_queue = Queue(
            name("billing.tasks.dead"),
            exchange=self.tasks_dead,
            routing_key="#",
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )

    def declare(self, connection: Connection) -> None:
        channel = connection.default_channel
        for entity in (
            self.responses,
            self.tasks_dead_queue,
            self.requests_dead_queue,
            self.requests_queue,
        ):
            entity.bind(channel).declare()


class EventPublisher:
    """Publishes events through a pool of confirmed producers."""

    def __init__(self, producers: ProducerPool, topology: Topology) -> None:
        self._producers = producers
        self._topology = topology

    def publish(self, events: list[Event]) -> None:
        try:
            with self._producers.acquire(block=True, timeout=10) as producer:
                for event in events:
                    producer.publish(
                        _encode(event.body),
                        exchange=self._topology.events,
                        routing_key=event.routing_key,
                        message_id=event.message_id,
                        delivery_mode=2,
                        content_type="application/json",
                        content_encoding="utf-8",
                        declare=[self._topology.responses],
                        retry=True,
                        retry_policy={"max_retries": 3, "interval_start": 0.2},
                    )
        except (BrokerOperationalError, OSError) as error:
            raise TransientError(f"could not publish events: {error}") from error

    def dead_letter_request(self, body: bytes, headers: dict[str, Any]) -> None:
        """Park an intake message that was valid JSON but could not be accepted."""
        try:
            with self._producers.acquire(block=True, timeout=10) as producer:
                producer.publish(
                    body,
                    exchange=self._topology.requests_dead,
                    routing_key="operation",
                    headers=headers,
                    delivery_mode=2,
                    content_type="application/json",
                    content_encoding="utf-8",
                    declare=[self._topology.requests_dead_queue],
                    retry=True,
                )
        except (BrokerOperationalError, OSError) as error:
            raise TransientError(f"could not dead-letter a request: {error}") from error


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)
