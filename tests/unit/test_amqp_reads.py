"""The buffered AMQP frame reader: whole frames out of whatever pieces the socket gives."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import amqp.exceptions
import pytest

from billing.adapters.amqp_reads import BufferedTcpTransport


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
