"""Run as a script with BILLING_AMQP_PREFIX set: one ledger task sent by `app.send_task` and
one by `TaskQueue`, read back from the tasks' queue, printed as JSON (then the queue is deleted).

The prefix must be one no worker consumes (celeryconfig reads it on import, so
it runs in a process of its own: tests/integration/test_task_message.py).
"""

from __future__ import annotations

import json
import sys

import celeryconfig
from billing.adapters.celery_client import APPLY_OPERATIONS_TASK, TaskQueue, make_celery_app


def main() -> None:
    ids = sys.argv[1:]
    app = make_celery_app(confirm_publish=True)
    read: list[dict[str, object]] = []
    with app.connection_for_write() as connection:
        queue = celeryconfig.tasks_queue(connection.default_channel)
        queue.declare()
        try:
            app.send_task(APPLY_OPERATIONS_TASK, args=[ids])
            TaskQueue(app).enqueue_operations(ids)
            for _ in range(2):
                message = queue.get(no_ack=True)
                assert message is not None, "a sent task is not on the queue"
                read.append(
                    {
                        "exchange": message.delivery_info["exchange"],
                        "routing_key": message.delivery_info["routing_key"],
                        "properties": message.properties,
                        "headers": message.headers,
                        "content_type": message.content_type,
                        "content_encoding": message.content_encoding,
                        "body": message.decode(),
                    }
                )
        finally:
            queue.delete()
            celeryconfig.tasks_exchange(connection.default_channel).delete()
            celeryconfig.tasks_dead_exchange(connection.default_channel).delete()
    print(json.dumps(read, default=str))


if __name__ == "__main__":
    main()
