"""The result task: publish recorded outcomes to the events exchange, after commit.

The ledger task publishes its events itself now; this task stays for the
result tasks that workers of earlier releases enqueued and that may still
wait in the results queue.
"""

from __future__ import annotations

import logging

from billing import service
from billing.adapters.celery_client import PUBLISH_EVENTS_TASK
from billing.ports import TransientError
from tasks.celery_app import app, event_publisher
from tasks.context import services

log = logging.getLogger(__name__)


@app.task(name=PUBLISH_EVENTS_TASK)
def publish_events(message_ids: list[str]) -> int:
    if not isinstance(message_ids, list) or not all(isinstance(m, str) for m in message_ids):
        log.error("publish_events: bad argument %r", message_ids)
        return 0
    try:
        return service.publish_events(message_ids, services().uow(), event_publisher())
    except TransientError as error:
        # The events stay in the outbox; the relay publishes them later.
        log.warning("publish_events: %s; left to the outbox relay", error)
        return 0
