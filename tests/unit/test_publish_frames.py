"""Event frames built directly are the bytes py-amqp's own framing sends for the same message."""

from __future__ import annotations

import pytest
from amqp import Message, spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.adapters.amqp_internals import PublishFrames
from billing.ports import Event


class _Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes | memoryview) -> None:
        self.chunks.append(bytes(data))


class _Connection:
    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0


def py_amqp_bytes(event: Event, channel_id: int, exchange: str, frame_max: int) -> bytes:
    """What `Channel.basic_publish(..., mandatory=True)` writes for the message."""
    sink = _Sink()
    write_frame = frame_writer(_Connection(frame_max), sink)
    message = Message(
        str(event.body).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=event.message_id,
    )
    arguments = dumps("Bssbb", (0, exchange, event.routing_key, True, False))
    write_frame(1, channel_id, spec.Basic.Publish, arguments, message)
    return b"".join(sink.chunks)


def our_bytes(event: Event, channel_id: int, exchange: str, frame_max: int) -> bytes:
    return b"".join(PublishFrames(channel_id, exchange, frame_max).of(event))


# Text that has a UTF-8 encoding (no lone surrogates), as every id and body does.
characters = st.characters(blacklist_categories=("Cs",))
identifiers = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x1F600, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.text(alphabet=characters, max_size=12_000),
    message_id=identifiers,
    routing_key=identifiers,
    channel_id=st.integers(min_value=1, max_value=2047),
    frame_max=st.sampled_from([4096, 5000, 131072]),
)
def test_the_frames_are_py_amqps_byte_for_byte(
    body: str, message_id: str, routing_key: str, channel_id: int, frame_max: int
) -> None:
    event = Event(message_id, routing_key, body)
    expected = py_amqp_bytes(event, channel_id, "billing.events", frame_max)
    assert our_bytes(event, channel_id, "billing.events", frame_max) == expected


def test_a_body_longer_than_a_frame_is_split_across_body_frames() -> None:
    event = Event("op-1", "operation.credit.succeeded", '{"a":"' + "é" * 5000 + '"}')
    frames = PublishFrames(1, "billing.events", 4096).of(event)
    assert [frame[0] for frame in frames] == [1, 2, 3, 3, 3]
    assert all(len(frame) <= 4096 for frame in frames)
    assert b"".join(frames) == py_amqp_bytes(event, 1, "billing.events", 4096)


def test_a_routing_key_longer_than_an_amqp_short_string_is_refused() -> None:
    event = Event("op-1", "k" * 256, "{}")
    with pytest.raises(ValueError, match="at most 255"):
        PublishFrames(1, "billing.events", 131072).of(event)
