"""A message carrying a malformed `x-death` header cannot switch off the broker's dead-lettering.

RabbitMQ 3.10.8 reads `x-death` when it dead-letters a message, and one that
is not a list of death records crashes its at-least-once dead-lettering for
every queue of the node until it restarts (then no queue of the service can
even be declared). The intake parks such a message as a copy without the
header, and the worker drops a task message carrying one, so the broker
never reads it. On a throwaway RabbitMQ of the test's own: were the guard
to fail, the shared broker would be the one broken.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue

from billing.config import Settings
from tests.e2e.test_intake import take_dead_requests
from tests.support import stack
from tests.support.throwaway import ThrowawayRabbit

# An array holding an integer where the broker expects tables (seen crashing 3.10.8).
MALFORMED = {"x-death": [5]}


@pytest.fixture(scope="module")
def own_broker(settings: Settings) -> Iterator[tuple[Settings, stack.Process]]:
    suffix = uuid.uuid4().hex[:6]
    rabbit = ThrowawayRabbit(f"xdeath{suffix}", stack.free_port(), stack.free_port())
    own = Settings(
        database_url=settings.database_url,
        broker_url=rabbit.url,
        api_tokens=settings.api_tokens,
        amqp_prefix=f"xdeath{suffix}",
    )
    worker: stack.Process | None = None
    try:
        rabbit.start()
        worker = stack.start_worker(own, f"xw{suffix}", 1)
        yield own, worker
    finally:
        if worker is not None:
            worker.kill()  # thrown away with its broker
        rabbit.remove()


def _publish(
    settings: Settings, exchange: str, routing_key: str, body: bytes, headers: Any
) -> None:
    target = Exchange(settings.amqp_name(exchange), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=target,
            routing_key=routing_key,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def _dead_lettering_works(settings: Settings) -> bool:
    """The broker can still declare a queue that dead-letters at least once."""
    probe = Queue(
        settings.amqp_name(f"probe-{uuid.uuid4().hex[:6]}"),
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": settings.amqp_name("billing.requests.dead"),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    try:
        with Connection(settings.broker_url) as connection:
            bound = probe(connection.channel())
            bound.declare()
            bound.delete()
        return True
    except Exception:
        return False


def test_an_intake_message_with_a_malformed_x_death_is_parked_without_breaking_dead_lettering(
    own_broker: tuple[Settings, stack.Process],
) -> None:
    settings, worker = own_broker
    hostile = json.dumps({"type": "credit", "operation_id": "x", "amount": -1}).encode()
    _publish(settings, "billing.requests", "operation", hostile, MALFORMED)
    plain = json.dumps({"type": "credit", "operation_id": "y", "amount": -2}).encode()
    _publish(settings, "billing.requests", "operation", plain, None)

    parked: list[bytes] = []

    def both_parked() -> bool:
        # Bodies with a content encoding come back decoded.
        parked.extend(
            b if isinstance(b, bytes) else b.encode() for b in take_dead_requests(settings)
        )
        return hostile in parked and plain in parked

    try:
        stack.wait_until(both_parked, 60, "both refused messages in billing.requests.dead")
    except TimeoutError:
        raise AssertionError(f"parked: {parked}") from None
    assert _dead_lettering_works(settings)
    assert worker.popen.poll() is None


def test_a_task_message_with_a_malformed_x_death_is_dropped_without_breaking_dead_lettering(
    own_broker: tuple[Settings, stack.Process],
) -> None:
    settings, worker = own_broker
    headers = {
        **MALFORMED,
        "task": "billing.apply_operations",
        "id": str(uuid.uuid4()),
        "lang": "py",
    }
    body = json.dumps([["not an id!"], {}, {}]).encode()
    queue = settings.amqp_name("billing.tasks")
    _publish(settings, "billing.tasks", queue, body, headers)
    # A refused task without the header still goes through the broker's dead-lettering.
    plain = {name: value for name, value in headers.items() if name != "x-death"}
    _publish(settings, "billing.tasks", queue, body, {**plain, "id": str(uuid.uuid4())})

    def plain_parked() -> bool:
        return _take(settings, "billing.tasks.dead") > 0

    parked = True
    try:
        stack.wait_until(plain_parked, 60, "the refused task in billing.tasks.dead")
    except TimeoutError:
        parked = False
    assert _dead_lettering_works(settings)
    assert parked, "the broker's dead-lettering did not park the refused task"
    assert worker.popen.poll() is None


def _take(settings: Settings, name: str) -> int:
    queue = Queue(
        settings.amqp_name(name), durable=True, queue_arguments={"x-queue-type": "quorum"}
    )
    taken = 0
    with Connection(settings.broker_url) as connection:
        bound = queue(connection.channel())
        while (message := bound.get(no_ack=False)) is not None:
            message.ack()
            taken += 1
    return taken
