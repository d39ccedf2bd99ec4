"""The Celery application of the workers and beat, and its process lifecycle hooks."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_process_init

from billing.adapters.celery_client import make_celery_app
from billing.adapters.events import Topology
from tasks import context

log = logging.getLogger(__name__)

app = make_celery_app("billing")
app.conf.include = ["tasks.ledger", "tasks.results", "tasks.periodic"]


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool child must never reuse the parent's database connections:
    # two processes on one socket interleave their protocol and corrupt both.
    context.reset()


@worker_init.connect
def _declare_topology(**_: Any) -> None:
    """Declare the events exchange, the responses queue and the dead-letter queue."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=None)
        Topology(context.services().settings).declare(connection)
