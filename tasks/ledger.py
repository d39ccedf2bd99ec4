"""The ledger task: apply accepted operations, then publish their outcomes."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict

from celery import Task
from celery.exceptions import MaxRetriesExceededError, Reject

from billing import gate, limits, service
from billing.adapters import metrics
from billing.adapters.celery_client import APPLY_OPERATION_TASK, APPLY_OPERATIONS_TASK
from billing.domain import ErrorCode
from billing.ports import EventsRefused, LockBusy, OperationRecord, TransientError
from tasks.celery_app import app, event_publisher
from tasks.context import services

log = logging.getLogger(__name__)


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
    """Apply one operation (tasks that senders of earlier releases enqueued)."""
    return apply_and_publish(self, _checked_ids([operation_id]))


@app.task(bind=True, name=APPLY_OPERATIONS_TASK, max_retries=limits.lock_retries_max)
def apply_operations(self: Task, operation_ids: list[str]) -> str:
    """Apply several operations in one transaction (the API groups what arrives together)."""
    return apply_and_publish(self, _checked_ids(operation_ids))


def _checked_ids(operation_ids: object) -> list[str]:
    """Task arguments are ids only; anything else is a poison message, never run."""
    if (
        not isinstance(operation_ids, list)
        or not 0 < len(operation_ids) <= limits.batch_size_max
        or not all(gate.identifier_problem(i) is None for i in operation_ids)
    ):
        raise Reject(f"not a list of operation ids: {operation_ids!r:.200}", requeue=False)
    return operation_ids


def apply_and_publish(task: Task, operation_ids: list[str]) -> str:
    """Apply the operations (retrying through Celery while a lock is busy), then publish.

    The events are published by this task, right after the commit, rather
    than by a task of their own: that was one more confirmed enqueue, one
    more trip through the broker and another process between an operation's
    commit and its event. Events this publish misses (a broker fault, a
    crash) stay in the outbox, and the relay publishes them.
    """
    started = time.monotonic()
    try:
        applied = service.apply_operations(operation_ids, services().uow())
    except TransientError as error:
        countdown = retry_countdown_s(task.request.retries)
        fault = "lock busy" if isinstance(error, LockBusy) else "transient error"
        if isinstance(error, LockBusy):
            metrics.lock_busy_retries.inc()
        log.info("operations %s: %s, retrying in %ss", operation_ids[:5], fault, countdown)
        try:
            raise task.retry(countdown=countdown, exc=error) from error
        except MaxRetriesExceededError:
            # Not lost: the operations are still recorded as pending, and the
            # recovery sweep enqueues them again after `pending_resend_after_s`.
            log.warning("operations %s: retries exhausted, left to the sweep", operation_ids[:5])
            return "retries_exhausted"
    elapsed_s = time.monotonic() - started
    missing = [a.operation_id for a in applied if not a.found]
    if missing:
        log.error("no such operations recorded, dropped: %s", missing[:20])
    event_ids = [event_id for outcome in applied for event_id in outcome.event_ids]
    if event_ids:
        _publish(event_ids)
    _observe([a.record for a in applied if a.record is not None], elapsed_s / len(applied))
    return f"applied {sum(a.newly_applied for a in applied)} of {len(applied)}"


def _publish(event_ids: list[str]) -> None:
    try:
        service.publish_events(event_ids, services().uow(), event_publisher())
    except EventsRefused as refused:
        # billing.responses is full (the publisher said so once, and counts
        # them): the task goes on with its work, the relay publishes them later.
        log.debug("operations %s: events left to the outbox relay: %s", event_ids[:5], refused)
    except TransientError as error:
        log.warning("operations %s: events left to the outbox relay: %s", event_ids[:5], error)


def _observe(records: list[OperationRecord], duration_s: float) -> None:
    """The metrics of applied operations, one label lookup per operation type and outcome."""
    completed: Counter[tuple[str, str, str]] = Counter()
    waits_s: dict[str, list[float]] = defaultdict(list)
    for record in records:
        operation_type = record.operation.type.value
        completed[operation_type, record.operation.status.value, record.error_code or ""] += 1
        if record.completed_at is not None:
            waited_s = (record.completed_at - record.accepted_at).total_seconds()
            waits_s[operation_type].append(max(waited_s, 0.0))
    for (operation_type, status, code), count in completed.items():
        metrics.operations_completed.labels(operation_type, status, code).inc(count)
        if code == ErrorCode.internal_error:
            metrics.internal_errors.labels(operation_type).inc(count)
    for operation_type, waits_s_of_type in waits_s.items():
        duration = metrics.ledger_task_duration.labels(operation_type)
        waited = metrics.acceptance_to_terminal.labels(operation_type)
        metrics.observe_many(duration, [duration_s] * len(waits_s_of_type))
        metrics.observe_many(waited, waits_s_of_type)
