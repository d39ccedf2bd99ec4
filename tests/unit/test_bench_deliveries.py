"""The bench's own reading of basic.deliver frames agrees with py-amqp's encoding of them."""

from __future__ import annotations

import struct
from typing import Any

import amqp.exceptions
import pytest
from amqp import Message
from amqp.serialization import dumps
from hypothesis import given
from hypothesis import strategies as st

from bench.broker import _BASIC_DELIVER, _Delivery

short_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
    max_size=40,
)
optional_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": short_text,
        "content_encoding": short_text,
        "application_headers": st.dictionaries(short_text, st.integers(0, 2**31), max_size=3),
        "delivery_mode": st.sampled_from([1, 2]),
        "priority": st.integers(0, 9),
        "correlation_id": short_text,
        "reply_to": short_text,
        "expiration": st.integers(0, 10**6).map(str),
        "message_id": short_text,
        "timestamp": st.integers(0, 2**40),
        "type": short_text,
        "app_id": short_text,
    },
)


def deliver_frame(routing_key: str) -> bytes:
    arguments = dumps("sLbss", ("ctag-1", 12345678901, True, "billing.events", routing_key))
    return _BASIC_DELIVER + arguments


def header_frame(body: bytes, properties: dict[str, Any]) -> bytes:
    message = Message(body, **properties)
    return struct.pack(">HHQ", 60, 0, len(body)) + message._serialize_properties()


@given(
    properties=optional_properties,
    body=st.binary(max_size=3000),
    chunk=st.integers(1, 1000),
    routing_key=short_text,
)
def test_the_routing_key_message_id_and_body_are_read_from_any_properties(
    properties: dict[str, Any], body: bytes, chunk: int, routing_key: str
) -> None:
    delivery = _Delivery(1, deliver_frame(routing_key))
    delivery.add(2, header_frame(body, properties))
    for start in range(0, len(body), chunk):
        assert not delivery.complete
        delivery.add(3, body[start : start + chunk])
    assert delivery.complete
    assert delivery.routing_key == routing_key
    assert delivery.message_id == properties.get("message_id")
    assert delivery.body == body


def test_a_method_frame_inside_a_body_is_refused() -> None:
    delivery = _Delivery(1, deliver_frame("operation.credit.succeeded"))
    delivery.add(2, header_frame(b"{}", {"message_id": "op-1"}))
    with pytest.raises(amqp.exceptions.UnexpectedFrame):
        delivery.add(1, deliver_frame("operation.credit.succeeded"))
