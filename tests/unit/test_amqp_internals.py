"""The fence around py-amqp's internals (billing/adapters/amqp_internals.py).

These tests fail when an installed py-amqp changes what the module relies
on: the frames `Channel.basic_publish` writes, the `bytes_sent` count, the
transport methods the buffered reads override and that every frame is read
through them. A fake broker on a local socket answers just enough of the
handshake for py-amqp's public path to run; then the buffered reader on
its own: whole frames out of whatever pieces the socket gives.
"""

from __future__ import annotations

import inspect
import socket
import struct
import threading
from collections.abc import Iterator

import amqp
import amqp.exceptions
import amqp.transport
import pytest
from kombu.transport import pyamqp

from billing.adapters.amqp_internals import (
    BufferedTcpTransport,
    PublishFrames,
    blocking_reader,
    write_frames,
)
from billing.ports import Event

_FRAME_MAX = 4096  # small, so that a body of a few KiB takes several frames


def method(channel: int, class_id: int, method_id: int, arguments: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + arguments)


class FakeBroker:
    """Just enough of an AMQP 0-9-1 server to connect, open a channel and publish.

    It answers the handshake, channel.open and the closes, and keeps the
    frames of every other method the client sends (the publishes), as bytes.
    """

    _EMPTY_TABLE = struct.pack(">I", 0)
    _START = struct.pack(">BB", 0, 9) + _EMPTY_TABLE + struct.pack(">I", 5) + b"PLAIN"
    _ANSWERS = {
        (10, 11): (10, 30, struct.pack(">HIH", 2047, _FRAME_MAX, 0)),  # start-ok: tune
        (10, 40): (10, 41, b"\x00"),  # connection.open: open-ok
        (20, 10): (20, 11, struct.pack(">I", 0)),  # channel.open: open-ok
        (20, 40): (20, 41, b""),  # channel.close: close-ok
        (10, 50): (10, 51, b""),  # connection.close: close-ok
    }
    _SILENT = {(10, 31)}  # tune-ok

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.kept: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        peer, _ = self._listener.accept()
        with peer, peer.makefile("rb") as reader:
            assert reader.read(8) == b"AMQP\x00\x00\x09\x01"
            peer.sendall(method(0, 10, 10, self._START + struct.pack(">I", 5) + b"en_US"))
            while head := reader.read(7):
                _, channel, size = struct.unpack(">BHI", head)
                payload = reader.read(size)
                raw = head + payload + reader.read(1)
                called = struct.unpack(">HH", payload[:4]) if head[0] == 1 else None
                if called in self._ANSWERS:
                    peer.sendall(method(channel, *self._ANSWERS[called]))
                elif called not in self._SILENT:
                    self.kept.append(raw)
                if called == (10, 50):
                    return

    def join(self) -> None:
        self._thread.join(5)
        self._listener.close()


def test_the_hand_made_frames_are_what_basic_publish_writes_and_are_counted_alike() -> None:
    events = [
        Event("op-1", "operation.credit.succeeded", '{"amount":5}'),
        Event('id "é" \\ 💸', "operation.transfer.failed", '{"memo":"' + "é" * 5000 + '"}'),
    ]
    broker = FakeBroker()
    connection = amqp.Connection(f"127.0.0.1:{broker.port}", connect_timeout=5)
    connection.connect()
    channel = connection.channel()
    assert connection.frame_max == _FRAME_MAX

    counted = connection.bytes_sent
    for event in events:
        message = amqp.Message(
            str(event.body).encode(),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=event.message_id,
        )
        channel.basic_publish(
            message, exchange="billing.events", routing_key=event.routing_key, mandatory=True
        )
    counted_by_py_amqp = connection.bytes_sent - counted
    frames = PublishFrames(channel.channel_id, "billing.events", connection.frame_max)
    ours = [f for event in events for f in frames.of(event)]
    counted = connection.bytes_sent
    write_frames(connection, ours, len(events))
    assert connection.bytes_sent - counted == counted_by_py_amqp > 0
    channel.close()
    connection.close()
    broker.join()

    assert [f[0] for f in ours] == [1, 2, 3, 1, 2, 3, 3, 3]
    py_amqps, hand_made = broker.kept[: -len(ours)], broker.kept[-len(ours) :]
    assert b"".join(hand_made) == b"".join(py_amqps)


def test_a_blocking_reader_reads_every_frame_through_the_buffered_transport() -> None:
    broker = FakeBroker()
    with blocking_reader(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5) as c:
        c.channel()  # the handshake and channel.open-ok read
        transport = c.connection.transport
        assert isinstance(transport, BufferedTcpTransport)
        # py-amqp took every frame it read from the buffer, none past it.
        assert 0 < transport._held_at == len(transport._held)
    broker.join()


def test_what_the_buffered_reads_override_is_still_there_with_the_same_parameters() -> None:
    def parameters(function: object) -> list[str]:
        return list(inspect.signature(function).parameters)  # type: ignore[arg-type]

    py_amqps = amqp.transport.TCPTransport
    assert parameters(BufferedTcpTransport.read_frame) == parameters(py_amqps.read_frame)
    assert parameters(py_amqps._setup_transport) == ["self"]
    # kombu makes the transport through the connection's `Transport`, with these.
    assert parameters(pyamqp.Connection.Transport)[:3] == ["self", "host", "connect_timeout"]


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


@pytest.fixture
def pair() -> Iterator[tuple[BufferedTcpTransport, socket.socket]]:
    ours, theirs = socket.socketpair()
    transport = BufferedTcpTransport.__new__(BufferedTcpTransport)
    transport.sock = ours
    transport._setup_transport()
    yield transport, theirs
    ours.close()
    theirs.close()


def test_frames_come_out_whole_however_the_bytes_arrive(
    pair: tuple[BufferedTcpTransport, socket.socket],
) -> None:
    transport, broker = pair
    frames = [frame(1, 1, b"method"), frame(2, 1, b"h" * 30), frame(3, 1, b"b" * 70_000)]
    data = b"".join(frames)
    broker.sendall(data[:3])  # not even a whole header
    broker.settimeout(None)
    transport.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        transport.read_frame()
    broker.sendall(data[3:20])
    assert transport.read_frame() == (1, 1, b"method")
    with pytest.raises(TimeoutError):  # the second frame is not whole yet
        transport.read_frame()
    broker.sendall(data[20:])
    assert transport.read_frame() == (2, 1, b"h" * 30)
    assert transport.read_frame() == (3, 1, b"b" * 70_000)


def test_a_wrong_frame_end_is_refused(pair: tuple[BufferedTcpTransport, socket.socket]) -> None:
    transport, broker = pair
    broker.sendall(frame(1, 0, b"x", end=0x00))
    with pytest.raises(amqp.exceptions.UnexpectedFrame):
        transport.read_frame()


def test_a_closed_connection_is_an_error(pair: tuple[BufferedTcpTransport, socket.socket]) -> None:
    transport, broker = pair
    broker.sendall(frame(1, 0, b"x")[:5])
    broker.close()
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()
