"""The ledger task: apply one accepted operation, then hand its outcome to the result task."""

from __future__ import annotations

import logging
import random
import re
import time

from celery import Task
from celery.exceptions import MaxRetriesExceededError, Reject

from billing import limits, service
from billing.adapters import metrics
from billing.adapters.celery_client import APPLY_OPERATION_TASK
from billing.ports import LockBusy, OperationRecord, TransientError
from tasks.celery_app import app
from tasks.context import services
from tasks.results import publish_events

log = logging.getLogger(__name__)
_IDENTIFIER = re.compile(limits.identifier_pattern)


def retry_countdown_s(retries: int) -> int:
    """Exponential backoff with full jitter, in whole seconds.

    Never below one second: on quorum queues a countdown goes through
    Celery's native delayed delivery, which truncates to whole seconds and
    refuses zero.
    """
    ceiling = min(limits.lock_retry_backoff_max_s, limits.lock_retry_backoff_min_s * 2**retries)
    return random.randint(
        limits.lock_retry_backoff_min_s, max(ceiling, limits.lock_retry_backoff_min_s)
    )


@app.task(bind=True, name=APPLY_OPERATION_TASK, max_retries=limits.lock_retries_max)
def apply_operation(self: Task, operation_id: str) -> str:
    if not isinstance(operation_id, str) or not _IDENTIFIER.match(operation_id):
        raise Reject(f"not an operation id: {operation_id!r}", requeue=False)
    return apply_and_publish(self, operation_id)


def apply_and_publish(task: Task, operation_id: str) -> str:
    """Apply the operation (retrying through Celery while its locks are busy), then publish."""
    started = time.monotonic()
    try:
        applied = service.apply_operation(operation_id, services().uow())
    except TransientError as error:
        countdown = retry_countdown_s(task.request.retries)
        kind = "lock busy" if isinstance(error, LockBusy) else "transient error"
        if isinstance(error, LockBusy):
            metrics.lock_busy_retries.inc()
        log.info("operation %s: %s, retrying in %ss", operation_id, kind, countdown)
        try:
            raise task.retry(countdown=countdown, exc=error) from error
        except MaxRetriesExceededError:
            # Not lost: the operation is still recorded as pending, and the
            # recovery sweep enqueues it again after `pending_resend_after_s`.
            log.warning("operation %s: retries exhausted, left to the recovery sweep", operation_id)
            return "retries_exhausted"
    if not applied.found:
        log.error("operation %s: no such operation recorded; dropping the task", operation_id)
        return "not_found"
    if applied.record is not None:
        _observe(applied.record, time.monotonic() - started)
    if applied.event_ids:
        publish_events.delay(applied.event_ids)
    return "applied" if applied.newly_applied else "already_applied"


def _observe(record: OperationRecord, duration_s: float) -> None:
    kind = record.operation.type.value
    metrics.ledger_task_duration.labels(kind).observe(duration_s)
    metrics.operations_completed.labels(
        kind, record.operation.status.value, record.error_code or ""
    ).inc()
    if record.completed_at is not None:
        waited_s = (record.completed_at - record.accepted_at).total_seconds()
        metrics.acceptance_to_terminal.labels(kind).observe(max(waited_s, 0.0))
