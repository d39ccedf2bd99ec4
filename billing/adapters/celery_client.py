"""The Celery application object, configured from `celeryconfig`, and the enqueue call.

Both the workers (`tasks`) and the API (which only sends) build their app
here, so the queues, exchanges and publisher confirms are the same on both
sides of the broker.
"""

from __future__ import annotations

import os
import threading

from amqp.exceptions import AMQPError
from celery import Celery
from kombu import Producer, Queue
from kombu.exceptions import OperationalError as BrokerOperationalError
from kombu.utils.uuid import uuid

from billing import limits
from billing.ports import TransientError

APPLY_OPERATION_TASK = "billing.apply_operation"
APPLY_OPERATIONS_TASK = "billing.apply_operations"
SUBMIT_REQUEST_TASK = "billing.submit_request"

# A short retry of a publish that hit a dropped connection; past it the caller
# gets a TransientError (a 503 from the API) within a few seconds.
ENQUEUE_RETRY_POLICY = {
    "max_retries": limits.enqueue_retries_max,
    "interval_start": limits.enqueue_retry_interval_first_s,
    "interval_step": limits.enqueue_retry_interval_step_s,
    "interval_max": limits.enqueue_retry_interval_max_s,
}


def make_celery_app(main: str = "billing", *, confirm_publish: bool = True) -> Celery:
    """The app as `celeryconfig` sets it up; `confirm_publish=False` sends without confirms."""
    app = Celery(main, set_as_current=False)
    app.config_from_object("celeryconfig")
    if not confirm_publish:
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "confirm_publish": False,
        }
    return app


class TaskQueue:
    """Sends ledger tasks by name, so the sender needs none of the task code.

    A ledger task goes out for every group of requests the API records, so
    its cost is on the path of every POST. `app.send_task` spent 0.8 ms of
    CPU a call on a 2-core AMD EPYC machine (2026-12-06), most of it work
    that is the same every time: the route looked up, the retry policy
    merged, a producer taken from the pool and given back, the queue's
    declaration checked, the arguments' `saferepr`. This sends the same
    message with public pieces of Celery and kombu
    (`app.amqp.create_task_message`, `Producer.publish`) on one producer
    kept per process: 0.4 ms. `tests/integration/test_task_message.py`
    holds what arrives on the queue equal to what `send_task` sends.
    """

    def __init__(self, app: Celery) -> None:
        self._app = app
        # Greenlets of the API (gevent patches threading) and threads share
        # the producer, one publish at a time.
        self._lock = threading.Lock()
        self._kept: tuple[int, Producer, Queue] | None = None

    def enqueue_operations(self, operation_ids: list[str]) -> None:
        """One ledger task for the operations, applied together in one transaction."""
        task_id = uuid()
        message = self._app.amqp.create_task_message(
            task_id,
            APPLY_OPERATIONS_TASK,
            [operation_ids],
            {},
            argsrepr=repr([operation_ids])[: limits.task_argsrepr_chars_max],
            kwargsrepr="{}",
            # What `send_task` gives when not told otherwise.
            reply_to=self._app.thread_oid,
            ignore_result=None,
        )
        try:
            with self._lock:
                producer, queue = self._producer()
                producer.publish(
                    message.body,
                    exchange=queue.exchange.name,
                    routing_key=queue.routing_key,
                    serializer="json",
                    delivery_mode=self._app.conf.task_default_delivery_mode,
                    # Declared once per connection (kombu remembers it), as
                    # `send_task` does: the first task on a new broker has a queue.
                    declare=[queue],
                    headers=message.headers,
                    retry=True,
                    retry_policy=ENQUEUE_RETRY_POLICY,
                    **message.properties,
                )
        except (BrokerOperationalError, AMQPError, OSError) as error:
            # AMQPError: the broker refused the channel or a declaration (a
            # 541 internal error seen when its dead-lettering had crashed):
            # unavailable as far as the client can tell, so a 503, not a 500.
            raise TransientError(f"broker unavailable: {error}") from error

    def _producer(self) -> tuple[Producer, Queue]:
        """This process's producer and the tasks' queue (a forked child makes its own)."""
        if self._kept is None or self._kept[0] != os.getpid():
            queue = self._app.amqp.router.route({}, APPLY_OPERATIONS_TASK)["queue"]
            producer = self._app.amqp.Producer(self._app.connection_for_write())
            self._kept = (os.getpid(), producer, queue)
        return self._kept[1], self._kept[2]

    def broker_reachable(self) -> bool:
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=limits.broker_connect_timeout_s)
            return True
        except Exception:
            return False
