"""The worker's consumer, changed in one respect: undecodable messages are dead-lettered.

Celery acknowledges a message it cannot decode (a pickle, a content type
outside `accept_content`, broken JSON), which drops it without a trace.
Rejecting it instead sends it to the queue's dead-letter exchange, where an
operator can inspect it; the worker carries on with the next message.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.error(
            "refused an undecodable message (content type %r): %s; dead-lettered",
            message.content_type,
            exc,
        )
        message.reject(requeue=False)
