"""The AMQP topology of the service and the publisher of outcome events.

`billing.events` is a durable topic exchange; `billing.responses` is a
durable quorum queue bound with `#`, so events are kept while nobody
consumes them, and on a cluster survive the loss of a node.
Events are persistent and published with confirms, in bursts, so a publish
that returns has reached the broker; and mandatory, after declaring
`billing.responses` and its binding again, so that what the broker confirms
has reached `billing.responses` too, even if an operator deleted or unbound it.

`billing.responses` is bounded (`x-max-length`, `x-max-length-bytes`,
`x-overflow: reject-publish`): once full, the broker refuses (nacks) new
events instead of holding them in its memory. A refused event is not
published: it stays in the outbox, on PostgreSQL's disk, and the relay
publishes it once the queue has room again (docs/operations.md, "The event
backlog").
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import amqp
import amqp.exceptions
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError as BrokerOperationalError
from kombu.pools import ProducerPool

from billing import limits
from billing.adapters import metrics
from billing.adapters.amqp_internals import PublishFrames, write_frames
from billing.adapters.failover import connect_to_a_node
from billing.config import Settings
from billing.ports import Event, EventsRefused, TransientError

log = logging.getLogger(__name__)


def responses_arguments(settings: Settings) -> dict[str, Any]:
    """The arguments `billing.responses` is declared with: a quorum queue with a bound.

    A quorum queue lets a few events past the bound (those in flight when it
    fills: about half a burst, measured on RabbitMQ 3.10) and takes new ones
    again once it is down to 80% of it.
    """
    return {
        "x-queue-type": "quorum",
        "x-max-length": settings.responses_max_events,
        "x-max-length-bytes": settings.responses_max_bytes,
        "x-overflow": "reject-publish",
    }


class Topology:
    """Every exchange and queue the service declares, named with the deployment's prefix."""

    def __init__(self, settings: Settings) -> None:
        name = settings.amqp_name
        self.events = Exchange(name("billing.events"), type="topic", durable=True)
        # A quorum queue, like every queue here: on a cluster it is replicated
        # on up to three nodes (the broker's default group size), so an event
        # the broker confirmed survives the loss of any one of them. Bounded:
        # when nobody reads it, the broker refuses new events (a nack) rather
        # than keep them all in its memory; they wait in the outbox instead.
        self.responses = Queue(
            name("billing.responses"),
            exchange=self.events,
            routing_key="#",
            durable=True,
            queue_arguments=responses_arguments(settings),
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
                "x-delivery-limit": limits.queue_delivery_limit,
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
        self.declare_responses(connection)
        channel = connection.default_channel
        for entity in (
            self.tasks_dead_queue,
            self.requests_dead_queue,
            self.requests_queue,
        ):
            entity.bind(channel).declare()

    def declare_responses(self, connection: Connection) -> bool:
        """Declare `billing.responses`, and keep one declared otherwise as it is.

        Older releases declared it as a classic queue (without arguments, or
        as version 2), or as a quorum queue without a bound, and a deployment
        may change its bound; the broker refuses to declare an existing queue
        with other arguments (406), so such a queue is only checked and
        bound, and goes on working as it was declared. docs/operations.md
        ("The event backlog") shows how to bound it in place with a policy,
        without losing an event. Whether the queue has the arguments declared
        here (False for one declared otherwise).
        """
        with contextlib.closing(connection.channel()) as channel:
            try:
                self.responses.bind(channel).declare()
                return True
            except amqp.exceptions.PreconditionFailed:
                pass  # the broker closed that channel
        with contextlib.closing(connection.channel()) as channel:
            channel.queue_declare(self.responses.name, passive=True)
            self.events.bind(channel).declare()
            channel.queue_bind(self.responses.name, self.events.name, "#")
        log.warning(
            "%s was declared with other arguments than %s (by an older release, or with "
            'another bound); it is used as it is: docs/operations.md ("The event backlog") '
            "shows how to bound it with a policy, and how to make a classic one a quorum queue",
            self.responses.name,
            self.responses.queue_arguments,  # type: ignore[attr-defined]
        )
        return False


class EventPublisher:
    """Publishes events in confirmed bursts on a connection of its own.

    A burst sends every message before it waits, then waits once for the
    broker to confirm them all (a persistent message is confirmed once the
    broker has it on disk), instead of one round trip per event. Each burst
    first declares `billing.responses` and its binding again, without
    waiting for an answer, and publishes mandatory: an event the broker
    could not route comes back (basic.return) and is not counted as published.

    A burst that fails is tried once more on a new connection; events that
    came back are sent once more on the same channel, after declaring again.
    If that fails too, a TransientError: the whole burst stays in the outbox
    and the relay publishes it later (those of its events that did arrive
    arrive twice, which at least once allows). Thread-safe; one per process
    (never shared across a fork).

    Events the broker refuses (a nack: `billing.responses` is full) or does
    not confirm because it blocks publishers (a resource alarm: memory or
    disk) raise EventsRefused at once, naming the ones it did take; the
    others stay in the outbox. Neither is tried again: the ledger task sends
    each of its events once and goes on with its work (the broker still
    routes a refused event to the other queues bound to `billing.events`, so
    their consumers get it at once), and for a back-off after a refusal
    (doubling while refusals go on, `backing_off`) the relay, which would
    send the same oldest events again, waits. While the broker blocks the
    connection nothing is sent on it at all.
    """

    def __init__(
        self,
        broker_url: str,
        producers: ProducerPool,
        topology: Topology,
        confirm_timeout_s: float = limits.event_confirm_timeout_s,
    ) -> None:
        self._broker_url = broker_url
        self._producers = producers
        self._topology = topology
        self._confirm_timeout_s = confirm_timeout_s
        self._lock = threading.Lock()
        self._burst: _ConfirmedChannel | None = None
        # Set when the broker refuses events; no burst goes out for the back-off after.
        self._refused_at = 0.0
        self._backoff_s = 0.0

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            self._refuse_while_blocked()
            unsent = events
            failure: Exception
            for attempt in (1, 2):
                try:
                    if self._burst is None:
                        self._burst = _ConfirmedChannel(self._broker_url, self._topology)
                    self._burst.publish(unsent, self._confirm_timeout_s)
                    self._backoff_s = 0.0
                    return
                except _Returned as returned:
                    # The channel is sound: the queue went away between its
                    # declaration and the publish, and is declared again first.
                    log.warning("%s; sending them once more", returned)
                    unsent, failure = returned.events, returned
                except _Refused as refused:
                    # The channel is sound too; what the broker took is published.
                    self._back_off()
                    metrics.events_refused.inc(len(events) - len(refused.published))
                    log.info("%s; the events wait in the outbox, for the relay", refused)
                    raise EventsRefused(
                        f"{refused}; they wait in the outbox, for the relay", refused.published
                    ) from refused
                except _BURST_ERRORS as error:
                    self.close_connection()
                    failure = error
                if attempt == 2:
                    raise TransientError(f"could not publish events: {failure}") from failure

    def _refuse_while_blocked(self) -> None:
        """Send nothing on a connection the broker does not read (a resource alarm)."""
        if self._burst is not None and not self._burst.unblocked():
            self._back_off()
            raise EventsRefused("the broker blocks publishers (a resource alarm)", [])

    def backing_off(self) -> bool:
        """Whether the broker refused events a moment ago: the relay, which sends the same
        oldest events again and again while the queue stays full, waits until this is over."""
        with self._lock:
            return time.monotonic() - self._refused_at < self._backoff_s

    def _back_off(self) -> None:
        self._refused_at = time.monotonic()
        self._backoff_s = min(
            max(self._backoff_s * 2, limits.events_refused_backoff_min_s),
            limits.events_refused_backoff_max_s,
        )

    def close_connection(self) -> None:
        burst, self._burst = self._burst, None
        if burst is not None:
            burst.close()

    def dead_letter_request(self, body: bytes, headers: dict[str, Any]) -> None:
        """Park an intake message that was valid JSON but could not be accepted."""
        try:
            with self._producers.acquire(
                block=True, timeout=limits.producer_pool_wait_s
            ) as producer:
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


class _Refused(Exception):
    """The broker refused (nacked) events of the burst, or blocked the connection."""

    def __init__(self, message: str, published: list[Event]) -> None:
        super().__init__(message)
        self.published = published


class _Returned(Exception):
    """The broker returned events of the burst: it could route them to no queue."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__(
            f"the broker returned {len(events)} events as unroutable "
            f"({events[0].routing_key} {events[0].message_id} first)"
        )
        self.events = events


class Confirms:
    """Which delivery tags of a channel in confirm mode the broker has confirmed.

    Every tag up to `up_to` is confirmed, and those in `above` beyond it: a
    broker confirms in order with `multiple` as a rule, singly and out of
    order at times. Counting this way costs nothing per tag, where a set of
    every unconfirmed tag was rebuilt on every multiple ack.
    """

    def __init__(self) -> None:
        self.up_to = 0
        self.above: set[int] = set()
        # The tags the broker refused (a nack), until `take_refused` takes them.
        self.refused: set[int] = set()

    def nack(self, delivery_tag: int, multiple: bool) -> None:
        """A refusal confirms its tags too: the broker will say no more of them."""
        if multiple:
            self.refused.update(
                t for t in range(self.up_to + 1, delivery_tag + 1) if t not in self.above
            )
        elif delivery_tag > self.up_to and delivery_tag not in self.above:
            self.refused.add(delivery_tag)
        self.ack(delivery_tag, multiple)

    def take_refused(self, first: int, last: int) -> set[int]:
        """The refused tags from `first` to `last`, forgotten from now on."""
        taken = {t for t in self.refused if first <= t <= last}
        self.refused.clear()
        return taken

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.up_to = max(self.up_to, delivery_tag)
            self.above = {t for t in self.above if t > self.up_to}
        elif delivery_tag > self.up_to:
            self.above.add(delivery_tag)
        while self.up_to + 1 in self.above:
            self.up_to += 1
            self.above.discard(self.up_to)

    def unconfirmed(self, sent: int) -> int:
        """How many of the first `sent` tags are not confirmed yet."""
        return sent - self.up_to - len(self.above)


class _ConfirmedChannel:
    """One connection and one channel in confirm mode, counting the broker's confirms."""

    def __init__(self, broker_url: str, topology: Topology) -> None:
        self._topology = topology
        self._connection = Connection(broker_url, connect_timeout=limits.broker_connect_timeout_s)
        connect_to_a_node(self._connection)
        self._channel = self._connection.channel()
        # The connection is this object's alone, so nothing else writes
        # between a burst's frames.
        self._amqp = self._connection.connection
        self._channel.confirm_select()
        self._channel.events["basic_ack"].add(self._on_ack)
        self._channel.events["basic_nack"].add(self._on_nack)
        self._channel.events["basic_return"].add(self._on_return)
        topology.events.bind(self._channel).declare()
        self._responses_as_declared = topology.declare_responses(self._connection)
        self._responses = topology.responses.bind(self._channel)
        self._frames = PublishFrames(
            self._channel.channel_id, topology.events.name, self._amqp.frame_max
        )
        self._sent = 0  # delivery tags count up from 1 on a channel in confirm mode
        self._confirms = Confirms()
        self._returned: set[str] = set()
        # The broker says connection.blocked when a resource alarm (memory or
        # disk) stops it reading what publishers send, and unblocked after.
        self._blocked = False
        self._amqp.on_blocked = self._on_blocked
        self._amqp.on_unblocked = self._on_unblocked
        metrics.broker_blocked.set(0)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirms.ack(delivery_tag, multiple)

    def _unconfirmed(self) -> int:
        return self._confirms.unconfirmed(self._sent)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirms.nack(delivery_tag, multiple)

    def _on_blocked(self, reason: str) -> None:
        log.warning("the broker blocks publishing connections: %s", reason)
        self._blocked = True
        metrics.broker_blocked.set(1)
        metrics.broker_blocked_notices.inc()

    def _on_unblocked(self) -> None:
        log.warning("the broker takes what publishers send again")
        self._blocked = False
        metrics.broker_blocked.set(0)

    def unblocked(self) -> bool:
        """Whether the broker reads this connection: while it blocks it, reads whether
        it stopped (never writing to it, so nothing waits on a socket it does not read)."""
        if self._blocked:
            with contextlib.suppress(TimeoutError, OSError):
                self._connection.drain_events(timeout=limits.broker_blocked_poll_s)
        return not self._blocked

    def _on_return(self, error: Exception, exchange: str, routing_key: str, message: Any) -> None:
        # A return carries the message, not its delivery tag; the broker sends
        # it before the message's ack, so a burst's returns are all in once
        # every event of it is confirmed.
        self._returned.add(message.properties.get("message_id"))

    def _declare_responses(self) -> None:
        """Declare `billing.responses` and its binding again, without waiting for an answer.

        The broker handles a channel's methods in order, so the burst's events
        are routed after both are in place: after an operator deleted or
        unbound the queue, the next burst reaches it again. This holds where a
        return cannot tell: while a client's own queue is bound to the
        exchange, an event routed there only is not returned. Without `nowait`
        this would be two more round trips per burst; with it, a failure (the
        queue made again meanwhile with other arguments, or an older release's
        queue deleted) closes the channel and fails the burst, and the new
        connection declares afresh. An older release's queue (see
        `Topology.declare_responses`) is declared passively.

        It costs the broker about 0.25 ms a burst, most of it the binding (a
        lone event confirmed in 0.50 ms instead of 0.27, median; a burst of
        500 in 21.7 ms instead of 21.6), paid per burst, not per event. A
        delete that races a burst already at the broker is like deleting
        the events already in the queue: those are the operator's to lose.
        """
        self._responses.queue_declare(nowait=True, passive=not self._responses_as_declared)
        self._responses.queue_bind(nowait=True)

    def publish(self, events: list[Event], timeout_s: float) -> None:
        # Straight onto the connection (`amqp_internals`: a sixth of the CPU
        # per event of py-amqp's own basic_publish). Their frames go out in
        # one write; an event that cannot be framed (a routing key or id over
        # 255 bytes) fails the burst before it, and nothing is sent.
        frames = [frame for event in events for frame in self._frames.of(event)]
        self._returned.clear()
        self._declare_responses()
        write_frames(self._amqp, frames, len(events))
        first = self._sent + 1
        self._sent += len(events)
        deadline = time.monotonic() + timeout_s
        while self._unconfirmed():
            if self._blocked:
                raise _Refused("the broker blocks publishers (a resource alarm)", [])
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"{self._unconfirmed()} events not confirmed in time")
            self._connection.drain_events(timeout=remaining_s)
        refused = self._confirms.take_refused(first, self._sent)
        if refused:
            # Matched by delivery tag: the events of the burst in order from `first`.
            taken = [e for tag, e in enumerate(events, first) if tag not in refused]
            published = [e for e in taken if e.message_id not in self._returned]
            raise _Refused(
                f"the broker refused {len(refused)} of {len(events)} events "
                "(billing.responses is full)",
                published,
            )
        if self._returned:
            # Matched by message_id; should none match, the whole burst goes again.
            raise _Returned([e for e in events if e.message_id in self._returned] or events)

    def close(self) -> None:
        # Closing a broken connection may fail in any way; it is dropped regardless.
        with contextlib.suppress(Exception):
            self._connection.close()


_BURST_ERRORS = (
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    BrokerOperationalError,
    OSError,
    TimeoutError,
)
