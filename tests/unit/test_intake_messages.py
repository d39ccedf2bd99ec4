"""The intake's own handling of one message: the rejection event always encodes, nothing escapes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from kombu import Message
from prometheus_client import REGISTRY

from billing import limits
from billing.adapters import jsoncodec, metrics
from billing.ports import TransientError
from tasks import intake
from tasks.intake import RequestIntake, parse_request, rejection_event


def encoded(event: Any) -> dict[str, Any]:
    """The event's body as it goes on the wire, read back."""
    return dict(json.loads(jsoncodec.text_of(event.body).encode("utf-8")))


def test_a_message_nested_1000_deep_is_refused_and_its_event_encodes() -> None:
    body = b"[" * 1000 + b"]" * 1000
    error = parse_request(body)
    assert isinstance(error, dict) and error["code"] == "validation_error"
    sent = encoded(rejection_event(error, body))
    assert sent["message"] == body.decode()
    assert sent["message_truncated"] is False
    assert sent["schema_version"] == 1


def test_a_key_the_error_names_with_a_lone_surrogate_still_encodes() -> None:
    body = b'{"type": "credit", "operation_id": "a", "account_id": "b", "amount": 1, "\\ud800": 1}'
    error = parse_request(body)
    assert isinstance(error, dict)
    assert "\ud800" in error["details"]  # the schema names the unknown field as it was given
    sent = encoded(rejection_event(error, body))
    assert sent["message"] == body.decode()


def test_a_long_message_is_carried_cut_at_the_limit_and_says_so() -> None:
    body = ("é" * (limits.rejected_message_chars_max + 10)).encode()
    sent = encoded(rejection_event({"code": "validation_error", "message": "x"}, body))
    assert sent["message"] == "é" * limits.rejected_message_chars_max
    assert sent["message_truncated"] is True


def test_bytes_that_are_not_utf8_are_carried_replaced() -> None:
    sent = encoded(rejection_event({"code": "validation_error", "message": "x"}, b"\xff{"))
    assert sent["message"] == "\ufffd{"


class FakeMessage(Message):  # type: ignore[misc]
    """A kombu message whose body raises, as a bug anywhere in the handling would."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(body=b"{}", delivery_tag=1)
        self.failure = failure
        self.settled: list[str] = []

    @property
    def body(self) -> bytes:
        raise self.failure

    @body.setter
    def body(self, value: bytes) -> None:
        pass

    def reject(self, requeue: bool = False) -> None:
        self.settled.append("requeued" if requeue else "rejected")
        self._state = "REJECTED"

    def requeue(self) -> None:
        self.settled.append("requeued")
        self._state = "REQUEUED"


def parked(reason: str) -> float:
    metrics.intake_messages_parked.labels(reason)  # a series exists from its first use
    value = REGISTRY.get_sample_value("billing_intake_messages_parked_total", {"reason": reason})
    return float(value or 0)


def intake_step() -> RequestIntake:
    return RequestIntake(parent=object())


def test_an_exception_while_handling_a_message_parks_it_logs_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = FakeMessage(RuntimeError("a bug"))
    before = parked("error")
    with caplog.at_level(logging.ERROR, logger=intake.__name__):
        intake_step().on_message(message)
    assert message.settled == ["rejected"]
    assert parked("error") == before + 1
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


def test_a_recursion_error_while_handling_a_message_parks_it_too() -> None:
    message = FakeMessage(RecursionError("maximum recursion depth exceeded"))
    intake_step().on_message(message)
    assert message.settled == ["rejected"]


def test_a_broker_outage_while_handling_a_message_gives_it_back() -> None:
    message = FakeMessage(TransientError("the broker is down"))
    before = parked("error")
    intake_step().on_message(message)
    assert message.settled == ["requeued"]
    assert parked("error") == before


def test_a_message_kombu_could_not_read_is_parked_and_counted() -> None:
    message = FakeMessage(RuntimeError("unused"))
    before = parked("unreadable")
    intake_step().on_unreadable(message, ValueError("a header kombu cannot use"))
    assert message.settled == ["rejected"]
    assert parked("unreadable") == before + 1
