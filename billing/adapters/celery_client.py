"""The Celery application object, configured from `celeryconfig`, and the enqueue call.

Both the workers (`tasks`) and the API (which only sends) build their app
here, so the queues, exchanges and publisher confirms are the same on both
sides of the broker.
"""

from __future__ import annotations

from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import OperationalError as BrokerOperationalError

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
    """Sends ledger tasks by name, so the sender needs none of the task code."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue_operations(self, operation_ids: list[str]) -> None:
        """One ledger task for the operations, applied together in one transaction."""
        try:
            self._app.send_task(
                APPLY_OPERATIONS_TASK,
                args=[operation_ids],
                retry=True,
                retry_policy=ENQUEUE_RETRY_POLICY,
            )
        except (BrokerOperationalError, AMQPError, OSError) as error:
            # AMQPError: the broker refused the channel or a declaration (a
            # 541 internal error seen when its dead-lettering had crashed):
            # unavailable as far as the client can tell, so a 503, not a 500.
            raise TransientError(f"broker unavailable: {error}") from error

    def broker_reachable(self) -> bool:
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=limits.broker_connect_timeout_s)
            return True
        except Exception:
            return False
