"""Inspect and replay the messages parked in the dead-letter queues.

RabbitMQ dead-letters a task that a worker refused (`rejected`) or that kept
crashing workers (`delivery_limit`) to `billing.tasks.dead`, and an intake
message that failed validation to `billing.requests.dead`, and records in the
message's `x-death` header the exchange and routing key it was published
with. Looking must not lose anything: every message is taken unacknowledged
and given back with `basic.nack` (requeue) when the run ends, or by the broker
when the connection drops. A replay publishes a copy to that exchange and
routing key with publisher confirms and acknowledges the dead copy only after
the broker confirmed the new one, so a run that dies midway leaves at worst a
duplicate (which the idempotent tasks absorb), never a loss.

A give-back adds one to the message's `x-delivery-count`: harmless, because
the dead queues are quorum queues without a delivery limit. A run looks only
at the messages that were in the queue when it started, so a poison message
that is dead-lettered again while the replay runs is not replayed twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from amqp import spec
from amqp.exceptions import MessageNacked, NotFound
from kombu import Connection, Queue
from kombu.exceptions import OperationalError
from kombu.message import Message

from billing import limits, untrusted_json
from billing.adapters.events import Topology
from billing.adapters.failover import connect_to_a_node
from billing.config import Settings

# The properties a replayed copy keeps besides its content type, encoding and
# priority. `expiration` is gone once a message is dead-lettered, and
# `user_id` would be refused unless it were our own login.
_KEPT_PROPERTIES = (
    "delivery_mode",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
)
_BROKER_HEADERS = ("x-delivery-count",)


class DeadLetterQueueMissing(Exception):
    """The dead-letter queue does not exist on the broker (a wrong prefix, or never declared)."""


class BrokerFailure(Exception):
    """The broker was unreachable or failed the run; what was not acknowledged stays dead."""


def dead_letter_queue(settings: Settings, which: str) -> str:
    topology = Topology(settings)
    queues = {"tasks": topology.tasks_dead_queue, "requests": topology.requests_dead_queue}
    return str(queues[which].name)


@dataclass(frozen=True)
class Origin:
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to know about one dead-lettered message."""

    position: int
    reason: str | None
    died_in: str | None
    deaths: int
    first_death_reason: str | None
    origin: Origin | None
    rejection: str | None
    task: str | None
    task_id: str | None
    operation_ids: list[str]
    args: str | None
    message_id: str | None
    content_type: str | None
    size_bytes: int
    body: str
    body_truncated: bool
    delivery_count: int
    x_death: list[Any]

    @classmethod
    def from_message(cls, message: Message, position: int) -> DeadLetter:
        headers = message.headers or {}
        deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
        latest = deaths[0] if deaths else {}
        routing_keys = latest.get("routing-keys") or []
        task = _text(headers.get("task"))
        preview = limits.dead_letter_body_preview_chars
        raw = raw_body(message)
        body = raw.decode("utf-8", errors="backslashreplace")
        return cls(
            position=position,
            reason=_text(latest.get("reason")),
            died_in=_text(latest.get("queue")),
            deaths=int(latest.get("count") or 0),
            first_death_reason=_text(headers.get("x-first-death-reason")),
            origin=Origin(str(latest.get("exchange") or ""), str(routing_keys[0]))
            if routing_keys
            else None,
            rejection=_text(headers.get("x-rejection")),
            task=task,
            task_id=_text(headers.get("id")),
            operation_ids=_operation_ids(task, raw),
            args=_text(headers.get("argsrepr")),
            message_id=_text(message.properties.get("message_id")),
            content_type=message.content_type or None,
            size_bytes=len(raw),
            body=body[:preview],
            body_truncated=len(body) > preview,
            delivery_count=int(headers.get("x-delivery-count") or 0),
            x_death=_jsonable(deaths),
        )

    def matches(self, ids: Sequence[str]) -> bool:
        return not ids or bool({self.task_id, *self.operation_ids} & set(ids))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def raw_body(message: Message) -> bytes:
    """The body as it travels: py-amqp hands over a text body already decoded."""
    body = message.body
    return body if isinstance(body, bytes) else body.encode(message.content_encoding or "utf-8")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _operation_ids(task: str | None, body: bytes) -> list[str]:
    """The operations a message is about, read without knowing every task by name.

    An intake message carries its `operation_id`; a task that takes the
    fields of a request (`submit_request`) has it in a dict argument; the
    ledger tasks take operation ids (one, or a list) as their first argument.
    """
    try:
        decoded = untrusted_json.parse(body, bytes_max=limits.dead_letter_parse_bytes_max)
    except untrusted_json.JsonRefused:
        return []
    if task is None:
        found = decoded.get("operation_id") if isinstance(decoded, dict) else None
        return [found] if isinstance(found, str) else []
    if not (isinstance(decoded, list) and decoded and isinstance(decoded[0], list)):
        return []
    args = decoded[0]
    in_fields = [a["operation_id"] for a in args if isinstance(a, dict) and "operation_id" in a]
    first = args[0] if args and not in_fields else in_fields
    candidates = first if isinstance(first, list) else [first]
    return [c for c in candidates if isinstance(c, str)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        # py-amqp reads an AMQP timestamp as a naive datetime in UTC.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class _Reader:
    """Takes messages off a dead queue unacknowledged, and gives back those it keeps."""

    def __init__(self, channel: Any, queue_name: str) -> None:
        self._channel = channel
        self._queue = Queue(queue_name, channel=channel, no_declare=True)
        self._kept: list[Message] = []
        self.acked = 0
        try:
            self.depth = self._ready()
        except NotFound as error:
            raise DeadLetterQueueMissing(f"no queue {queue_name} on the broker") from error

    def take(self) -> Iterator[Message]:
        """The messages present at the start, oldest first, up to the scan limit."""
        for _ in range(min(self.depth, limits.dead_letter_scan_max)):
            message = self._queue.get(no_ack=False)
            if message is None:
                return
            yield message

    def keep(self, message: Message) -> None:
        self._kept.append(message)

    def ack(self, message: Message) -> None:
        message.ack()
        self.acked += 1

    def give_back(self) -> None:
        """Return every kept message, and wait until the queue offers them again."""
        # basic.nack rather than basic.reject: RabbitMQ 4.3+ counts a reject
        # as a failed delivery, which a quorum queue's delivery limit acts on.
        for message in self._kept:
            self._channel.send_method(spec.Basic.Nack, "Lbb", (message.delivery_tag, False, True))
        self._kept.clear()
        # A quorum queue applies returns after its log commits them; until
        # then the next look at the queue would miss them.
        deadline = time.monotonic() + limits.dead_letter_give_back_wait_max_s
        while self._ready() < self.depth - self.acked and time.monotonic() < deadline:
            time.sleep(0.05)

    def _ready(self) -> int:
        return int(self._queue.queue_declare(passive=True).message_count)


@contextmanager
def _connect(settings: Settings) -> Iterator[Connection]:
    """A connection whose channels publish with confirms; closing it gives back the unacked."""
    connection = Connection(
        settings.broker_url,
        connect_timeout=limits.dead_letter_connect_timeout_s,
        transport_options={"confirm_publish": True},
    )
    failures = (
        OperationalError,
        MessageNacked,
        *connection.connection_errors,
        *connection.channel_errors,
    )
    try:
        with connection:
            connect_to_a_node(connection)
            yield connection
    except failures as error:
        raise BrokerFailure(f"{type(error).__name__}: {error}") from error


def list_dead_letters(
    settings: Settings, which: str, *, limit: int, ids: Sequence[str] = ()
) -> tuple[int, list[DeadLetter]]:
    """The queue's depth and its first messages (matching `ids`); all stay in the queue."""
    found: list[DeadLetter] = []
    with _connect(settings) as connection:
        reader = _Reader(connection.channel(), dead_letter_queue(settings, which))
        for position, message in enumerate(reader.take(), 1):
            reader.keep(message)
            letter = DeadLetter.from_message(message, position)
            if letter.matches(ids):
                found.append(letter)
                if len(found) >= limit:
                    break
        reader.give_back()
    return reader.depth, found


@dataclass
class Replay:
    """The tally of a replay run, updated as it goes."""

    queue: str
    depth: int
    dry_run: bool
    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    unroutable: int = 0

    def count(self, step: str) -> None:
        if step == "skipped":
            self.skipped += 1
        elif step == "unroutable":
            self.unroutable += 1
        else:
            self.replayed += 1


ReplayStep = Callable[[Replay, str, DeadLetter], None]


def replay_dead_letters(
    settings: Settings,
    which: str,
    *,
    ids: Sequence[str] = (),
    limit: int | None = None,
    dry_run: bool = False,
    on_step: ReplayStep,
) -> Replay:
    """Move dead messages back to where they were published; `on_step` hears of each one.

    A message without an `x-death` header (one the intake parked itself, for
    an idempotency conflict) has nowhere to go back to and is left in place.
    """
    name = dead_letter_queue(settings, which)
    with _connect(settings) as connection:
        reader = _Reader(connection.channel(), name)
        publisher = _Publisher(connection.channel())
        tally = Replay(queue=name, depth=reader.depth, dry_run=dry_run)
        for position, message in enumerate(reader.take(), 1):
            tally.scanned += 1
            letter = DeadLetter.from_message(message, position)
            if not letter.matches(ids):
                reader.keep(message)
                continue
            step = _replay_one(message, letter, reader, publisher, dry_run=dry_run)
            tally.count(step)
            on_step(tally, step, letter)
            if limit is not None and tally.replayed >= limit:
                break
        reader.give_back()
    return tally


def _replay_one(
    message: Message, letter: DeadLetter, reader: _Reader, publisher: _Publisher, *, dry_run: bool
) -> str:
    if letter.origin is None:
        reader.keep(message)
        return "skipped"
    if dry_run:
        reader.keep(message)
        return "would replay"
    if not publisher.publish(message, letter.origin):
        reader.keep(message)
        return "unroutable"
    reader.ack(message)
    return "replayed"


class _Publisher:
    """Confirmed, mandatory publishes: a copy no queue would take is reported, not dropped."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._returned = False
        channel.events["basic_return"].add(self._on_return)

    def _on_return(self, *_: Any) -> None:
        self._returned = True

    def publish(self, message: Message, origin: Origin) -> bool:
        """True once the broker confirmed the copy and routed it to a queue."""
        self._returned = False
        headers = {k: v for k, v in message.headers.items() if k not in _BROKER_HEADERS}
        properties = {k: message.properties[k] for k in _KEPT_PROPERTIES if k in message.properties}
        copy = self._channel.prepare_message(
            raw_body(message),
            priority=message.properties.get("priority"),
            content_type=message.content_type or None,
            content_encoding=message.content_encoding or None,
            headers=headers,
            properties=properties,
        )
        # The broker returns an unroutable mandatory message before it confirms it.
        self._channel.basic_publish(
            copy,
            exchange=origin.exchange,
            routing_key=origin.routing_key,
            mandatory=True,
            confirm_timeout=limits.dead_letter_confirm_timeout_s,
        )
        return not self._returned
