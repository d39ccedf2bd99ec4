"""The enqueue call turns every way a broker can refuse a publish into a TransientError (a 503)."""

from __future__ import annotations

from typing import Any

import amqp.exceptions
import pytest
from kombu.exceptions import OperationalError

import celeryconfig
from billing.adapters.celery_client import TaskQueue, make_celery_app
from billing.ports import TransientError


class _RefusingProducer:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


def _refusing_queue(error: BaseException) -> TaskQueue:
    """The real sender, whose producer raises `error` on publish (no broker is reached)."""
    queue = TaskQueue(make_celery_app(confirm_publish=False))
    queue._producer = lambda: (_RefusingProducer(error), celeryconfig.tasks_queue)  # type: ignore[method-assign, assignment, return-value]
    return queue


@pytest.mark.parametrize(
    "error",
    [
        amqp.exceptions.InternalError("541 INTERNAL_ERROR"),
        amqp.exceptions.NotFound("404 no exchange"),
        amqp.exceptions.ConnectionForced("320"),
        OperationalError("connection refused"),
        ConnectionResetError("reset"),
    ],
)
def test_a_broker_refusing_the_enqueue_is_a_transient_error(error: BaseException) -> None:
    with pytest.raises(TransientError):
        _refusing_queue(error).enqueue_operations(["op-1"])


def test_a_bug_in_the_enqueue_is_not_taken_for_an_outage() -> None:
    with pytest.raises(TypeError):
        _refusing_queue(TypeError("bug")).enqueue_operations(["op-1"])
