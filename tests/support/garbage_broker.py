"""The broker side of the garbage test: publish raw messages, watch queues, take dead letters.

Messages are published with py-amqp itself, so a body, a content type and
headers go out exactly as drawn (kombu would fill in what is missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import amqp
import amqp.exceptions
from kombu import Connection

from billing.config import Settings
from tests.support.garbage import CONTROL, INTAKE, PERIODIC, TASKS, Garbage

WORK_QUEUES = ("billing.tasks", "billing.periodic", "billing.requests")


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class GarbageBroker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        name = settings.amqp_name
        self.routes = {
            INTAKE: (name("billing.requests"), "operation"),
            TASKS: (name("billing.tasks"), name("billing.tasks")),
            PERIODIC: (name("billing.tasks"), name("billing.periodic")),
            CONTROL: (f"{name('billing')}.pidbox", ""),
        }

    @contextlib.contextmanager
    def channel(self, confirm: bool = False) -> Iterator[amqp.Channel]:
        """A channel that hands bodies over as the bytes that were sent (never decoded)."""
        url = Connection(self.settings.broker_url)
        connection = amqp.Connection(
            host=f"{url.hostname}:{url.port or 5672}",
            userid=url.userid,
            password=url.password,
            virtual_host=url.virtual_host,
            confirm_publish=confirm,
        )
        connection.connect()
        try:
            channel = amqp.Channel(connection, auto_decode=False)
            channel.open()
            yield channel
        finally:
            with contextlib.suppress(amqp.exceptions.AMQPError, OSError):
                connection.close()

    def publish(self, messages: list[Garbage]) -> list[str]:
        """Publish every message with confirms; the errors of those the broker refused."""
        refused = []
        with self.channel(confirm=True) as channel:
            for message in messages:
                exchange, routing_key = self.routes[message.queue]
                properties: dict[str, Any] = {"delivery_mode": 2}
                if message.content_type is not None:
                    properties["content_type"] = message.content_type
                if message.content_encoding is not None:
                    properties["content_encoding"] = message.content_encoding
                if message.headers is not None:
                    properties["application_headers"] = message.headers
                try:
                    channel.basic_publish(
                        amqp.Message(message.body, **properties), exchange, routing_key
                    )
                except (amqp.exceptions.AMQPError, ValueError, TypeError) as error:
                    refused.append(f"{message.queue}/{message.kind}: {error!r:.200}")
                    channel = amqp.Channel(channel.connection, auto_decode=False)
                    channel.open()
        return refused

    def depths(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of each queue the workers consume."""
        found = {}
        with self.channel() as channel:
            for queue in WORK_QUEUES:
                _, count, consumers = channel.queue_declare(
                    self.settings.amqp_name(queue), passive=True
                )
                found[queue] = (count, consumers)
        return found

    def wait_drained(self, deadline: float, alive: Any) -> dict[str, tuple[int, int]]:
        """Poll until the work queues stay empty, a worker dies, or the deadline passes."""
        empty_polls = 0
        depths = self.depths()
        while time.monotonic() < deadline and alive():
            depths = self.depths()
            empty_polls = empty_polls + 1 if all(c == 0 for c, _ in depths.values()) else 0
            if empty_polls >= 3:
                break
            time.sleep(0.5)
        return depths

    def take_all(self, queue: str) -> list[tuple[str, bytes, dict[str, Any]]]:
        """Take every message off a queue: (routing key, body, headers)."""
        taken = []
        with self.channel() as channel:
            while (message := channel.basic_get(self.settings.amqp_name(queue))) is not None:
                routing_key = message.delivery_info["routing_key"]
                taken.append((routing_key, _raw_body(message), message.headers or {}))
                channel.basic_ack(message.delivery_tag)
        return taken

    def purge_work_queues(self) -> None:
        with self.channel() as channel:
            for queue in WORK_QUEUES:
                with contextlib.suppress(amqp.exceptions.AMQPError):
                    channel.queue_purge(self.settings.amqp_name(queue))


class WorkerWatch:
    """Reads the workers' logs as they grow: a worker that logged a critical error is lost.

    Celery logs `Unrecoverable error` when its consumer dies, and the process
    may linger afterwards without consuming anything, so being alive is not
    enough.
    """

    def __init__(self, processes: list[Any]) -> None:
        self.processes = list(processes)
        self._offsets = {p.name: p.log_path.stat().st_size for p in self.processes}
        self.fatal: dict[str, list[str]] = {p.name: [] for p in self.processes}

    def poll(self) -> None:
        for process in self.processes:
            with process.log_path.open("rb") as log:
                log.seek(self._offsets[process.name])
                grown = log.read()
            complete = grown.rfind(b"\n") + 1
            self._offsets[process.name] += complete
            for line in grown[:complete].decode(errors="replace").splitlines():
                if '"level": "critical"' in line or "Unrecoverable error" in line:
                    self.fatal[process.name].append(_summary(line))

    def lost(self) -> list[Any]:
        self.poll()
        return [p for p in self.processes if not p.alive() or self.fatal[p.name]]


def _summary(line: str) -> str:
    """A critical log line cut to its message and the end of its traceback."""
    try:
        record = json.loads(line)
    except ValueError:
        return line[:2000]
    trace = str(record.get("exception") or "").splitlines()
    return f"{str(record.get('message'))[:600]}\n    " + "\n    ".join(trace[-8:])


def _raw_body(message: Any) -> bytes:
    """The body as published: py-amqp decodes a body whose content encoding it knows.

    A message without a body keeps py-amqp's default, the empty text, which
    no encoding must turn into bytes (UTF-32 would make a byte order mark of it).
    """
    if isinstance(message.body, str) and not message.body:
        return b""
    if isinstance(message.body, str):
        encoding = message.properties.get("content_encoding") or "utf-8"
        try:
            return message.body.encode(encoding, "surrogateescape")
        except LookupError:  # a garbage encoding py-amqp still decoded with
            return message.body.encode("utf-8", "surrogateescape")
    return bytes(message.body)
