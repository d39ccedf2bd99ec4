"""The intake's side of kombu: the consumer of `billing.requests` and the messages it delivers.

The intake's rules live in `tasks/intake.py`; what they need of kombu (its
consumer, its message class, its broker error) is made here, so no driver is
imported outside `billing/adapters/`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu import Consumer, Message
from kombu.exceptions import OperationalError as BrokerOperationalError
from kombu.transport.pyamqp import Message as AmqpMessage

from billing.adapters.events import Topology

__all__ = [
    "BrokerOperationalError",
    "IntakeMessage",
    "Message",
    "intake_consumer",
    "is_kombu_message",
]


class IntakeMessage(AmqpMessage):  # type: ignore[misc]
    """kombu's message, except that a compressed body is left compressed, to be refused.

    kombu decompresses a body whose `compression` header names a codec it
    knows, at once and without a limit, before any code of ours sees it: a
    1 MB zlib message could take a gigabyte of the worker's memory. The
    intake takes plain JSON only, so the header is taken off (and kept as
    `compression`) and the message is refused like any other that is not JSON.

    Set as the `Message` class of the intake's own channel, which kombu's
    pyamqp transport builds each delivered message with (kombu 5.5 to 5.7);
    tests/e2e/test_intake.py sends a compressed message and fails if kombu
    inflates it again.
    """

    def __init__(self, msg: Any, channel: Any = None, **kwargs: Any) -> None:
        headers = msg.properties.get("application_headers") or {}
        self.compression = headers.get("compression")
        if self.compression is not None:
            msg.properties["application_headers"] = {
                name: value for name, value in headers.items() if name != "compression"
            }
        super().__init__(msg, channel=channel, **kwargs)


def intake_consumer(
    channel: Any,
    topology: Topology,
    *,
    on_message: Callable[[Message], None],
    on_unreadable: Callable[[Any, Exception], None],
    prefetch_count: int,
) -> Consumer:
    """A consumer of `billing.requests` on `channel`, acknowledging by hand."""
    # The step's own channel: kombu's pyamqp channel builds every message
    # it delivers with its `Message` class.
    channel.Message = IntakeMessage
    return Consumer(
        channel,
        queues=[topology.requests_queue],
        on_message=on_message,
        on_decode_error=on_unreadable,
        no_ack=False,
        prefetch_count=prefetch_count,
    )


def is_kombu_message(message: Any) -> bool:
    """Whether kombu made a message of the delivery (False: what py-amqp delivered, raw)."""
    return isinstance(message, Message)
