"""The worker's consumer, changed: undecodable and malformed task messages are dead-lettered.

Celery acknowledges a message it cannot decode (a pickle, a content type
outside `accept_content`, broken JSON), which drops it without a trace.
Rejecting it instead sends it to the queue's dead-letter exchange, where an
operator can inspect it; the worker carries on with the next message.

Celery also reads a task message's headers and body in the worker's main
process, before any task code runs, and some shapes make that reading raise:
a `task` or `id` header that is a list or an object, a body that is not
`[args, kwargs, embed]`. Such an error escapes into the consumer's event
loop, which stops the whole worker (and the message, redelivered, stops the
next one). Those messages are refused here like undecodable ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

log = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.error(
            "refused an undecodable message (content type %r): %s; dead-lettered",
            message.content_type,
            exc,
        )
        message.reject(requeue=False)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        handler = super().create_task_handler(promise)
        broker_errors = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handler(message)
            except broker_errors:
                raise  # the consumer reconnects, as for any broker fault
            except Exception as error:
                log.error("refused a malformed task message: %r; dead-lettered", error)
                if not message.acknowledged:
                    message.reject_log_error(log, broker_errors)
                return None

        return on_task_received
