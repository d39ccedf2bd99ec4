"""The composition root: builds the real engine, unit of work and task queue.

Nothing is built at import time; a process builds its `Services` once it
knows it needs them (after fork, for the Celery pool's children).
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from billing import limits
from billing.adapters.celery_client import TaskQueue, make_celery_app
from billing.adapters.database import make_engine
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.config import Settings
from billing.domain import Operation
from billing.grouping import Grouper
from billing.ports import OperationRecord
from billing.service import Acceptance, accept_and_enqueue


class Services:
    def __init__(
        self, settings: Settings, *, pool_size: int = limits.database_pool_size_api
    ) -> None:
        self.settings = settings
        self._pool_size = pool_size

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url, pool_size=self._pool_size)

    @cached_property
    def task_queue(self) -> TaskQueue:
        """The API's queue of ledger tasks, sent without waiting for the broker's confirm.

        The API records an operation before it enqueues it, and only then, so
        a confirm would change nothing of what becomes of the operation: a
        task that the broker never took is sent again by the recovery sweep,
        whether the API knew of it (and answered 503, to a retry that finds
        the operation recorded) or not. Waiting for it was 1.3 ms of each
        request of a lone client (the quorum queue confirms once the message
        is on disk); a broker that is down still fails the request.
        """
        return TaskQueue(make_celery_app(confirm_publish=False))

    @cached_property
    def acceptor(self) -> Grouper[Operation, tuple[Acceptance, OperationRecord]]:
        """Records and enqueues a request's operation at once, or with those that came meanwhile."""
        return Grouper(
            lambda operations: accept_and_enqueue(
                operations, self.uow(), self.task_queue.enqueue_operations
            ),
            limits.enqueue_group_size_max,
            limits.enqueue_wait_max_s,
        )

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    def dispose(self) -> None:
        """Drop pooled connections, e.g. ones inherited across a fork."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
            del self.__dict__["engine"]
