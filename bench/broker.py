"""The bench's AMQP side: the event stream it reads outcomes from, and the intake it may feed.

Each runs in a thread of its own with its own kombu connection, so the
asyncio loop that drives HTTP never blocks on the broker.
"""

from __future__ import annotations

import asyncio
import json
import queue
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import amqp
import amqp.exceptions
from kombu import Connection, Exchange, Producer, Queue

from bench import config
from bench.config import Settings
from bench.workload import EVENT_SOURCES

# The one piece of the service the bench imports (import-linter lets it): the
# buffered frame reads, fenced in one module, that take the event stream's
# reads from nine system calls a delivery to a few per 64 KiB.
from billing.adapters.amqp_internals import blocking_reader

broker_wait_s = 10
drain_poll_s = 0.25
confirm_timeout_s = 10


class Outcome(NamedTuple):
    """When an operation's event arrived (time.monotonic) and its error code (None: succeeded)."""

    arrived_at: float
    error_code: str | None


class EventStream:
    """Outcomes of the run's operations, read by a thread from a queue.

    From its own queue (`own`): exclusive and auto-deleted, bound to the
    events exchange with `operation.#`, it sees every operation event while
    the bench runs, leaves nothing behind, and takes nothing from
    `billing.responses`. From `billing.responses` (`responses`): the bench is
    the service's client, as a deployment has one, and the broker routes each
    event to one queue instead of two; it consumes exclusively, so it refuses
    to start while another client consumes there, and takes every event that
    arrives, other operations' too (counted in `other_events`). Events are
    matched by `message_id` (the operation id); a repeated delivery is ignored.
    """

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        on_hold_succeeded: Callable[[str], None],
        source: str = "own",
    ) -> None:
        assert source in EVENT_SOURCES, source
        self._settings = settings
        self._source = source
        # Events of operations not of this run (taken from billing.responses when read there).
        self.other_events = 0
        self._id_prefix = f"{run_id}-"
        self._queue_name = settings.amqp_name(f"bench.{run_id}")
        self._on_hold_succeeded = on_hold_succeeded
        # Written by the consumer thread only; the loop reads it (dict reads are atomic).
        self.outcomes: dict[str, Outcome] = {}
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-events", daemon=True)

    def start(self) -> None:
        """Start consuming; returns once the queue is bound, so no event can be missed."""
        self._thread.start()
        if not self._ready.wait(broker_wait_s) or self.error is not None:
            raise RuntimeError(f"could not consume events: {self.error or 'broker timed out'}")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(broker_wait_s)

    def _run(self) -> None:
        try:
            with blocking_reader(
                self._settings.broker_url, connect_timeout=broker_wait_s
            ) as connection:
                channel = connection.channel()
                queue_name = self._declare(connection, channel)
                # Raw deliveries, not kombu Messages: thousands arrive each
                # second, and the bench shares the CPU with the service.
                try:
                    # A quorum queue takes an exclusive consumer beside others
                    # (a classic queue refused it): look for them first.
                    if self._source == "responses":
                        consumers = channel.queue_declare(queue_name, passive=True).consumer_count
                        if consumers:
                            raise amqp.exceptions.AccessRefused(f"{consumers} consumer(s)")
                    channel.basic_consume(
                        queue_name,
                        no_ack=True,
                        exclusive=self._source == "responses",
                        callback=self._on_message,
                    )
                except amqp.exceptions.AccessRefused as error:
                    raise RuntimeError(
                        f"{queue_name} has another consumer, whose events the bench would "
                        "take: stop it, or read events from the bench's own queue "
                        f"(--events own): {error}"
                    ) from error
                self._ready.set()
                self._read_deliveries(connection.connection)
        except Exception as error:  # the run reports it: a dead stream must not pass silently
            self.error = error
        finally:
            self._ready.set()

    def _declare(self, connection: Connection, channel: amqp.Channel) -> str:
        """Declare the queue to read from; its name.

        `billing.responses` is the service's: it declares it, with arguments
        of its own, so the bench only looks for it (below), as a client does.
        """
        if self._source == "responses":
            return self._settings.amqp_name(config.RESPONSES_QUEUE)
        own_queue = Queue(
            self._queue_name,
            exchange=_events_exchange(self._settings),
            routing_key="operation.#",
            durable=False,
            exclusive=True,
            auto_delete=True,
        )
        own_queue.bind(channel).declare()
        return str(own_queue.name)

    def _read_deliveries(self, connection: amqp.Connection) -> None:
        """Take the deliveries' frames off the socket; any other frame goes to py-amqp.

        py-amqp builds a message object and decodes every property of each
        delivery: half of the load generator's CPU in the batch run, where
        thousands of events arrive each second. A delivery is three frames
        or more (method, content header, body) on the consumer's channel;
        only the routing key, the message id and the body are needed.
        """
        transport = connection.transport
        transport.sock.settimeout(drain_poll_s)
        delivery: _Delivery | None = None
        while not self._stopping.is_set():
            try:
                frame = transport.read_frame()
            except TimeoutError:
                continue
            frame_type, channel, payload = frame
            if delivery is not None and channel == delivery.channel and frame_type != 8:
                delivery.add(frame_type, payload)
            elif frame_type == 1 and payload[:4] == _BASIC_DELIVER:
                delivery = _Delivery(channel, payload)
            else:  # heartbeats, other channels, any other method
                connection.on_inbound_frame(frame)
                continue
            if delivery.complete:
                self._on_delivery(delivery.message_id, delivery.routing_key, delivery.body)
                delivery = None

    def _on_message(self, message: amqp.Message) -> None:
        """A delivery py-amqp decoded (kept for deliveries that reach the channel's callback)."""
        self._on_delivery(
            message.properties.get("message_id"), message.delivery_info["routing_key"], message.body
        )

    def _on_delivery(self, operation_id: object, routing_key: str, body: bytes) -> None:
        arrived_at = time.monotonic()
        if not isinstance(operation_id, str) or not operation_id.startswith(self._id_prefix):
            self.other_events += 1
            return
        if operation_id in self.outcomes:
            return
        _, kind, status = routing_key.split(".", 2)
        error_code = None
        if status != "succeeded":
            error_code = str(json.loads(body).get("error", {}).get("code", status))
        self.outcomes[operation_id] = Outcome(arrived_at, error_code)
        if kind == "hold" and error_code is None:
            self._on_hold_succeeded(operation_id)


# basic.deliver: class 60, method 60.
_BASIC_DELIVER = struct.pack(">HH", 60, 60)
# basic's content properties in the order the header carries them, each with
# its flag bit, and how to skip it: a short string, a table (32-bit length),
# an octet or a 64-bit timestamp. The message id is the one read.
_PROPERTIES = (
    (0x8000, "short"),  # content-type
    (0x4000, "short"),  # content-encoding
    (0x2000, "table"),  # headers
    (0x1000, 1),  # delivery-mode
    (0x0800, 1),  # priority
    (0x0400, "short"),  # correlation-id
    (0x0200, "short"),  # reply-to
    (0x0100, "short"),  # expiration
    (0x0080, "message_id"),
)


def _short_string(payload: bytes, at: int) -> tuple[str, int]:
    """A short string at `at`, and where the next field starts."""
    size = payload[at]
    return payload[at + 1 : at + 1 + size].decode(), at + 1 + size


class _Delivery:
    """One delivery's frames as they arrive (AMQP 0-9-1: method, content header, body)."""

    def __init__(self, channel: int, method: bytes) -> None:
        self.channel = channel
        # consumer-tag, delivery-tag (64 bits), redelivered, exchange, routing-key
        _, at = _short_string(method, 4)
        _, at = _short_string(method, at + 9)
        self.routing_key, _ = _short_string(method, at)
        self.message_id: str | None = None
        self._size: int | None = None
        self._chunks: list[bytes] = []
        self._received = 0

    @property
    def complete(self) -> bool:
        return self._size is not None and self._received >= self._size

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def add(self, frame_type: int, payload: bytes) -> None:
        if self._size is None:
            if frame_type != 2:
                raise amqp.exceptions.UnexpectedFrame(f"frame {frame_type} after basic.deliver")
            self._size, flags = struct.unpack_from(">QH", payload, 4)
            self.message_id = _message_id(payload, flags)
            return
        if frame_type != 3:
            raise amqp.exceptions.UnexpectedFrame(f"frame {frame_type} inside a message body")
        self._chunks.append(payload)
        self._received += len(payload)


def _message_id(header: bytes, flags: int) -> str | None:
    at = 14  # class, weight, body size, flags
    for flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        if kind == "message_id":
            return _short_string(header, at)[0]
        if kind == "short":
            at += 1 + header[at]
        elif kind == "table":
            at += 4 + struct.unpack_from(">I", header, at)[0]
        else:
            at += int(kind)
    return None


class IntakePublisher:
    """Publishes operations to `billing.requests` (routing key `operation`) with confirms.

    One thread owns the connection; `publish` hands it a message and awaits
    the broker's confirm without blocking the loop.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pending: queue.Queue[tuple[bytes, asyncio.Future[bool]] | None] = queue.Queue()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-intake", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()
        if not self._ready.wait(broker_wait_s) or self.error is not None:
            raise RuntimeError(f"could not publish to the intake: {self.error or 'timed out'}")

    def stop(self) -> None:
        self._pending.put(None)
        self._thread.join(broker_wait_s)

    async def publish(self, message: dict[str, Any]) -> bool:
        """True once the broker confirmed the message, False when it could not be published."""
        assert self._loop is not None
        confirmed: asyncio.Future[bool] = self._loop.create_future()
        self._pending.put((json.dumps(message).encode(), confirmed))
        return await confirmed

    def _run(self) -> None:
        options = {"confirm_publish": True}
        name = self._settings.amqp_name
        try:
            with Connection(self._settings.broker_url, transport_options=options) as connection:
                # The first node of a cluster's URL list that answers, each tried once.
                connection.ensure_connection(max_retries=max(len(connection.alt), 1) - 1)
                channel = connection.channel()
                # The service declares the intake's exchange and queue (with
                # arguments of its own); the bench only checks that they are
                # there, so a message is never dropped for want of the queue.
                requests = Exchange(name(config.REQUESTS_EXCHANGE), type="direct", durable=True)
                requests.bind(channel).declare(passive=True)
                channel.queue_declare(name(config.REQUESTS_QUEUE), passive=True)
                producer = Producer(channel, exchange=requests, auto_declare=False)
                self._ready.set()
                while (item := self._pending.get()) is not None:
                    body, confirmed = item
                    self._resolve(confirmed, self._publish_one(producer, body))
        except Exception as error:
            self.error = error
        finally:
            self._ready.set()
            self._fail_remaining()

    def _publish_one(self, producer: Producer, body: bytes) -> bool:
        try:
            producer.publish(
                body,
                routing_key=config.REQUESTS_ROUTING_KEY,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                confirm_timeout=confirm_timeout_s,
            )
        except Exception as error:
            self.error = error
            return False
        return True

    def _resolve(self, confirmed: asyncio.Future[bool], value: bool) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_set_result, confirmed, value)

    def _fail_remaining(self) -> None:
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._resolve(item[1], False)


def _events_exchange(settings: Settings) -> Exchange:
    return Exchange(settings.amqp_name(config.EVENTS_EXCHANGE), type="topic", durable=True)


def _set_result(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
