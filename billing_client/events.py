"""Reading the service's events from RabbitMQ, typed, acknowledged after the caller's code.

By default the consumer reads the service's own queue `billing.responses`
(every event). A service that wants only some events, or its own copy of
them, names a queue of its own and routing patterns
(`operation.transfer.*`, `hold.expired`): the queue is declared durable and
bound to the exchange `billing.events` with those patterns.

An event is acknowledged only after the handler returns. If the handler
raises, the event goes back to the queue and the exception stops the
consumer: the event comes again later (events are at least once, so a
handler must tolerate a repeat; `message_id` is the operation id, and
`event_seq` the event's number in the feed, the same in every copy).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from kombu import Connection, Consumer, Exchange, Queue, binding
from kombu.message import Message

from billing_client import limits
from billing_client.models import Event, event_from_message


class EventConsumer:
    """A connection to the broker that hands each event to a handler, then acknowledges it.

    >>> with EventConsumer("amqp://guest:guest@127.0.0.1:5672//") as events:
    ...     events.consume(print, idle_timeout_s=5)
    """

    def __init__(
        self,
        broker_url: str,
        *,
        prefix: str = "",
        queue: str | None = None,
        routing_keys: Sequence[str] = ("#",),
        prefetch_count: int = limits.events_prefetch_count,
    ) -> None:
        self._connection = Connection(broker_url)
        self._prefetch_count = prefetch_count
        exchange_name = f"{prefix}.billing.events" if prefix else "billing.events"
        if queue is None:
            # The service declares billing.responses with arguments of its own; it is only used.
            responses = f"{prefix}.billing.responses" if prefix else "billing.responses"
            self.queue = Queue(responses, no_declare=True)
        else:
            exchange = Exchange(exchange_name, type="topic", durable=True)
            self.queue = Queue(
                queue,
                durable=True,
                bindings=[binding(exchange, routing_key=key) for key in routing_keys],
            )

    def __enter__(self) -> EventConsumer:
        self._connection.ensure_connection(max_retries=limits.request_attempts_max)
        return self

    def __exit__(self, *_: object) -> None:
        self._connection.release()

    def declare(self) -> None:
        """Declare the queue and bind it now (`consume` does so too), so that it keeps every
        event published from this moment on: before catching up from the feed. Nothing for
        `billing.responses`, which the service declares."""
        channel = self._connection.channel()
        try:
            self.queue.bind(channel).declare()
        finally:
            channel.close()

    def consume(
        self,
        handler: Callable[[Event], Any],
        *,
        limit: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> int:
        """Hand events to `handler` until `limit` were handled or none came for `idle_timeout_s`.

        Without either, it runs until the handler raises (or Ctrl-C). Returns
        how many events were handled and acknowledged.
        """
        handled = 0
        failure: list[BaseException] = []

        def on_message(message: Message) -> None:
            nonlocal handled
            if failure or (limit is not None and handled >= limit):
                message.requeue()  # prefetched beyond what this call handles
                return
            info = message.delivery_info
            event = event_from_message(
                info.get("routing_key", ""),
                message.properties.get("message_id"),
                bool(info.get("redelivered")),
                _decode(message),
            )
            try:
                handler(event)
            except BaseException as error:
                message.requeue()
                failure.append(error)
                return
            message.ack()
            handled += 1

        channel = self._connection.channel()
        try:
            with Consumer(
                channel,
                queues=[self.queue],
                on_message=on_message,
                prefetch_count=self._prefetch_count,
            ):
                idle_since = time.monotonic()
                while not failure and (limit is None or handled < limit):
                    before = handled
                    with contextlib.suppress(TimeoutError):
                        self._connection.drain_events(timeout=_tick_s(idle_timeout_s))
                    if handled != before:
                        idle_since = time.monotonic()
                    elif idle_timeout_s is not None and (
                        time.monotonic() - idle_since >= idle_timeout_s
                    ):
                        break
        finally:
            channel.close()
        if failure:
            raise failure[0]
        return handled


def _tick_s(idle_timeout_s: float | None) -> float:
    return 1.0 if idle_timeout_s is None else max(0.05, min(1.0, idle_timeout_s))


def _decode(message: Message) -> Any:
    try:
        return json.loads(message.body)
    except (ValueError, TypeError):
        return message.body
