"""Periodic jobs run by `billing beat`: hold expiry, outbox relay and pruning, recovery sweep."""

from __future__ import annotations

import logging

from billing import limits, service
from billing.adapters import event_feed, metrics
from billing.ports import LockBusy, TransientError
from tasks.celery_app import app, event_publisher, ledger_tasks
from tasks.context import services

log = logging.getLogger(__name__)


@app.task(name="billing.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Publish events left unpublished: a crash between commit and publish, or refused by
    the broker (`billing.responses` full). Not while this process's publisher backs off
    from a refusal: the same oldest events would only be refused again."""
    publisher = event_publisher()
    if publisher.backing_off():
        return 0
    try:
        published = service.relay_events(
            services().uow(),
            publisher,
            older_than_s=limits.outbox_republish_after_s,
        )
    except TransientError as error:
        log.warning("outbox relay: %s", error)
        return 0
    if published:
        log.info("outbox relay published %d events", published)
    return published


@app.task(name="billing.resend_pending", ignore_result=True)
def resend_pending() -> int:
    """Enqueue again operations still pending long after acceptance (a lost task).

    One sent again too often ends failed with internal_error instead (see
    `service.resend_stuck_operations`); its outcome is published at once.
    """
    try:
        operation_ids, given_up = service.resend_stuck_operations(
            services().uow(),
            ledger_tasks().enqueue_operations,
            older_than_s=limits.pending_resend_after_s,
            limit=limits.sweep_batch_size_max,
        )
    except TransientError as error:
        log.warning("recovery sweep: %s", error)
        return 0
    if operation_ids:
        log.warning("recovery sweep enqueued %d pending operations again", len(operation_ids))
    ended = [a.record for a in given_up if a.record is not None]
    for record in ended:
        metrics.internal_errors.labels(record.operation.type.value).inc()
    event_ids = [event_id for applied in given_up for event_id in applied.event_ids]
    if event_ids:
        # Published here, as the ledger task and the hold expiry do; what this
        # misses stays in the outbox for the relay.
        try:
            service.publish_events(event_ids, services().uow(), event_publisher())
        except TransientError as error:
            log.warning("recovery sweep: events left to the outbox relay: %s", error)
    return len(operation_ids)


@app.task(name="billing.expire_holds", ignore_result=True)
def expire_holds() -> int:
    """Expire every active hold whose expires_at has passed, and publish hold.expired."""
    expired: list[str] = []
    try:
        for hold_id in service.due_holds(services().uow(), limit=limits.sweep_batch_size_max):
            try:
                event_id = service.expire_hold(hold_id, services().uow())
            except LockBusy:
                continue  # its account is busy; the next run, a second from now, expires it
            if event_id:
                expired.append(event_id)
        if expired:
            service.publish_events(expired, services().uow(), event_publisher())
    except TransientError as error:
        log.warning("hold expiry: %s", error)
    return len(expired)


@app.task(name="billing.prune_outbox", ignore_result=True)
def prune_outbox() -> int:
    """Delete published events past the feed's retention, and vacuum the pending marks.

    The marks are inserted and deleted with every event; vacuumed here
    whatever autovacuum does, they stay as small as the events waiting.
    """
    try:
        pruned = service.prune_events(
            services().uow(),
            retention_days=services().settings.event_retention_days,
            rows_per_transaction=limits.outbox_prune_rows_per_transaction_max,
            transactions_max=limits.outbox_prune_transactions_per_run_max,
        )
        event_feed.vacuum_pending_marks(services().engine)
    except TransientError as error:
        log.warning("outbox pruning: %s", error)
        return 0
    if pruned:
        log.info("outbox pruning deleted %d events past the retention", pruned)
    return pruned
