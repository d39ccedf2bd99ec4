"""The Celery application of the workers and beat, its process lifecycle hooks, its publisher."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)

from billing import logs
from billing.adapters import metrics
from billing.adapters.celery_client import TaskQueue, make_celery_app
from billing.adapters.events import EventPublisher, Topology
from tasks import context

log = logging.getLogger(__name__)

app = make_celery_app("billing")
app.conf.include = ["tasks.ledger", "tasks.periodic", "tasks.intake"]

_publisher: EventPublisher | None = None
_ledger_tasks: TaskQueue | None = None


def ledger_tasks() -> TaskQueue:
    """The process's sender of ledger tasks (the recovery sweep's), with confirms."""
    global _ledger_tasks
    if _ledger_tasks is None:
        _ledger_tasks = TaskQueue(app)
    return _ledger_tasks


def event_publisher() -> EventPublisher:
    """The process's publisher of events (its own broker connection, made on first use)."""
    global _publisher
    if _publisher is None:
        settings = context.services().settings
        _publisher = EventPublisher(settings.broker_url, app.producer_pool, Topology(settings))
    return _publisher


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    global _publisher, _ledger_tasks
    # A forked pool child must never reuse the parent's database or broker
    # connections: two processes on one socket interleave their protocol and corrupt both.
    context.reset()
    _publisher = None
    _ledger_tasks = None
    # What a started worker holds (Celery, kombu, SQLAlchemy, the app) lives as
    # long as the process. Frozen, it is no longer walked by every full
    # collection, which a ledger batch of 500 operations set off about once.
    gc.freeze()


@worker_init.connect
def _declare_topology(**_: Any) -> None:
    """Declare the events exchange, the responses queue and the dead-letter queues."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=None)
        Topology(context.services().settings).declare(connection)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """With `billing worker --metrics-port N`, serve this machine's metrics on port N."""
    port = int(os.environ.get("BILLING_WORKER_METRICS_PORT") or 0)
    if port and metrics.metrics_dir():
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        start_http_server(port, registry=registry)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _structured_logs(logger: logging.Logger, **_: Any) -> None:
    logs.reformat(logger, "beat" if "beat" in " ".join(sys.argv) else "worker")


@task_prerun.connect
def _remember_operation(args: Any = None, **_: Any) -> None:
    """Tag every line a ledger task logs with its operation id."""
    first = args[0] if args else None
    logs.current_operation_id.set(first if isinstance(first, str) else None)


@task_postrun.connect
def _forget_operation(**_: Any) -> None:
    logs.current_operation_id.set(None)
