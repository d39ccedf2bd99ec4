"""The enqueue call turns every way a broker can refuse a publish into a TransientError (a 503)."""

from __future__ import annotations

from typing import Any

import amqp.exceptions
import pytest
from kombu.exceptions import OperationalError

from billing.adapters.celery_client import TaskQueue
from billing.ports import TransientError


class _RefusingApp:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


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
        TaskQueue(_RefusingApp(error)).enqueue_operations(["op-1"])  # type: ignore[arg-type]


def test_a_bug_in_the_enqueue_is_not_taken_for_an_outage() -> None:
    with pytest.raises(TypeError):
        TaskQueue(_RefusingApp(TypeError("bug"))).enqueue_operations(["op-1"])  # type: ignore[arg-type]
