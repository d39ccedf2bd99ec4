"""The one module that relies on py-amqp's internals: each piece here pays for itself.

Everything else talks to the broker through kombu's and py-amqp's public
API. What is here was measured against that API on the batch scenario's
shape (bursts of 500 events of about 450 bytes, persistent, mandatory, with
confirms, on a durable quorum queue; the shared 2-core machine, busy, load
average 7 to 9; medians of 3 runs of 10 bursts each way, back to back):

- `PublishFrames` and `write_frames`: the frames of a burst built directly
  and written in one write. The publisher's CPU per event: 4.3 to 4.8 us,
  against 30 to 45 through `Channel.basic_publish` and 36 to 49 through
  kombu's `Producer.publish`; the burst confirmed in 38 to 47 ms instead of
  60 to 116. About 26 us of the worker's CPU per event: 9% of the 0.279 ms
  of CPU the batch scenario spends per operation (docs/performance.md),
  each operation being one event.
- `BufferedTcpTransport` (`blocking_reader`): frames read 64 KiB at a time.
  For the load generator's event stream, which reads every event of a run
  as raw frames on the machine whose CPU the service shares: 1.7 us per
  event instead of 11.5 (py-amqp reads each frame in three `recv` calls),
  3.5% of the batch scenario's CPU per operation. The event publisher does
  not use it: its confirms, a few multiple acks a burst, read as fast
  through py-amqp's own transport (2.2 against 2.3 ms a burst of 500).

What they rely on, held by tests/unit/test_amqp_internals.py, which fails
when an installed py-amqp changes it: the frames `Channel.basic_publish`
writes for such a message (compared byte for byte, captured from a socket);
`Connection.transport.write` and the `bytes_sent` count heartbeats read;
`TCPTransport._setup_transport`, `read_frame` and `sock`, and that a
connection reads every frame through `read_frame`. pyproject.toml pins
`amqp` to the releases tested.
"""

from __future__ import annotations

import struct
from typing import Any

import amqp
import amqp.exceptions
import amqp.transport
from kombu import Connection
from kombu.transport import pyamqp

from billing.adapters import jsoncodec
from billing.adapters.failover import connect_to_a_node
from billing.ports import Event

_FRAME_HEAD = struct.Struct(">BHI")
_FRAME_END = 0xCE


def _shortstr(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"AMQP short string of {len(data)} bytes (at most 255): {value[:40]}...")
    return bytes((len(data),)) + data


class PublishFrames:
    """The frames of basic.publish for persistent JSON events, built directly.

    What py-amqp's `Channel.basic_publish(..., mandatory=True)` would send
    for `amqp.Message(body, content_type="application/json",
    content_encoding="utf-8", delivery_mode=2, message_id=...)` (AMQP 0-9-1:
    a method frame, a content header frame, the body in frames of at most
    `frame_max`), byte for byte, without building a message object and
    serializing its properties one by one.
    """

    _END = bytes((_FRAME_END,))
    # basic.publish (class 60, method 40), ticket 0.
    _PUBLISH = struct.pack(">HHH", 60, 40, 0)
    # The bits after the routing key: mandatory set (an unroutable event comes
    # back), immediate not.
    _MANDATORY = b"\x01"
    # Content header of class 60, weight 0; the property flags (content-type,
    # content-encoding, delivery-mode, message-id) come after the body size.
    _FLAGS = 0x8000 | 0x4000 | 0x1000 | 0x0080
    _PROPERTIES = _shortstr("application/json") + _shortstr("utf-8") + bytes((2,))

    def __init__(self, channel_id: int, exchange: str, frame_max: int) -> None:
        self._channel_id = channel_id
        self._exchange = _shortstr(exchange)
        self._body_max = frame_max - 8  # a frame's header (7 bytes) and its end (1)

    def _frame(self, kind: int, payload: bytes) -> bytes:
        return _FRAME_HEAD.pack(kind, self._channel_id, len(payload)) + payload + self._END

    def of(self, event: Event) -> list[bytes]:
        body = jsoncodec.text_of(event.body).encode()
        method = self._PUBLISH + self._exchange + _shortstr(event.routing_key) + self._MANDATORY
        header = (
            struct.pack(">HHQH", 60, 0, len(body), self._FLAGS)
            + self._PROPERTIES
            + _shortstr(event.message_id)
        )
        frames = [self._frame(1, method), self._frame(2, header)]
        for start in range(0, len(body), self._body_max):
            frames.append(self._frame(3, body[start : start + self._body_max]))
        return frames


def write_frames(connection: amqp.Connection, frames: list[bytes], methods: int) -> None:
    """Write the frames of `methods` methods in one write, counted as py-amqp counts them.

    py-amqp counts each method it writes in `bytes_sent`, which its
    heartbeats read as traffic. The connection must be the caller's alone:
    nothing else may write between the frames.
    """
    connection.transport.write(b"".join(frames))
    connection.bytes_sent += methods


read_size = 1 << 16


class BufferedTcpTransport(amqp.transport.TCPTransport):
    """Reads the socket 64 KiB at a time and cuts the frames out of what it holds.

    Only a whole frame is taken out of the buffer, so a read that times out
    (a consumer polling with a timeout) leaves nothing half-read.
    """

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._held = b""
        self._held_at = 0

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        while True:
            held, at = self._held, self._held_at
            if len(held) - at >= _FRAME_HEAD.size:
                frame_type, channel, size = _FRAME_HEAD.unpack_from(held, at)
                end = at + _FRAME_HEAD.size + size
                if len(held) > end:
                    if held[end] != _FRAME_END:
                        raise amqp.exceptions.UnexpectedFrame(
                            f"Received frame_end {held[end]:#04x} while expecting 0xce"
                        )
                    self._held_at = end + 1
                    return frame_type, channel, held[at + _FRAME_HEAD.size : end]
            data = self.sock.recv(read_size)
            if not data:
                self.connected = False
                raise OSError("Server unexpectedly closed connection")
            self._held, self._held_at = held[at:] + data, 0


class _BufferedConnection(pyamqp.Connection):  # type: ignore[misc]
    def Transport(
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> amqp.transport.TCPTransport:
        options = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
            "socket_settings": socket_settings,
            **kwargs,
        }
        if ssl:  # TLS reads stay py-amqp's own
            return super().Transport(host, ssl=ssl, **options)
        return BufferedTcpTransport(host, **options)


class _BufferedReads(pyamqp.Transport):  # type: ignore[misc]
    Connection = _BufferedConnection


class _BufferedFailover(Connection):  # type: ignore[misc]
    """A connection to one of several nodes that keeps the buffered reads on every node.

    kombu's `switch` (to the next URL of a `;`-separated list, when a node
    fails) takes the transport from the next URL's scheme, which would drop
    the buffered reads after the first failover.
    """

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)
        self.transport_cls = _BufferedReads


def blocking_reader(broker_url: str, **options: Any) -> Connection:
    """A kombu connection whose reads are buffered, for a user that only reads by blocking calls.

    Only for such a connection (`drain_events`, `read_frame`): a connection
    polled by an event loop (Celery's consumer) must not hold frames the
    loop's poll cannot see.

    `broker_url` may list a cluster's nodes separated by `;`: the connection
    is made to the first node that answers, each tried once in order (a
    caller that retries starts again from the first). Any other URL scheme
    than RabbitMQ's keeps kombu's own transport.
    """
    urls = broker_url.split(";")
    if not all(url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp") for url in urls):
        return Connection(broker_url, **options)
    connection = _BufferedFailover(broker_url, transport=_BufferedReads, **options)
    connect_to_a_node(connection)
    return connection
