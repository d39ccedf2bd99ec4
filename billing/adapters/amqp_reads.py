"""Buffered frame reads for py-amqp connections that only ever read with blocking calls.

py-amqp reads each frame in three `recv` calls sized to the header, the
payload and the end octet: nine system calls for a message of three frames,
and three for each confirm. The bench's event stream reads thousands of
events a second and the event publisher thousands of confirms, on machines
whose CPU the whole service shares, so their connections read 64 KiB at a
time instead. Only for connections read by blocking calls (`drain_events`):
a connection polled by an event loop (Celery's consumer) must not hold
frames the loop's poll cannot see.
"""

from __future__ import annotations

import struct
from typing import Any

import amqp.exceptions
import amqp.transport
from kombu import Connection
from kombu.transport import pyamqp

from billing.adapters.failover import connect_to_a_node

read_size = 1 << 16
_FRAME_HEAD = struct.Struct(">BHI")
_FRAME_END = 0xCE


class BufferedTcpTransport(amqp.transport.TCPTransport):
    """Reads the socket 64 KiB at a time and cuts the frames out of what it holds.

    Only a whole frame is taken out of the buffer, so a read that times out
    (a consumer polling with a timeout, a publisher waiting for confirms)
    leaves nothing half-read.
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
