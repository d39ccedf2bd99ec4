"""A ledger task sent by `TaskQueue` is the message `app.send_task` sends, as the broker holds it.

`TaskQueue` builds the message with Celery's `app.amqp.create_task_message`
and publishes it with kombu instead of calling `send_task` (billing/adapters/
celery_client.py says why). This holds the two equal on the real broker,
routing, properties, headers and body, so a Celery release that changes what
`send_task` sends fails here before a worker reads something else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

from billing import limits
from tests.support import stack

# Differ by construction: each message has its own task id.
PER_MESSAGE = {"id", "root_id", "correlation_id"}


def _sent_both_ways(operation_ids: list[str]) -> list[dict[str, Any]]:
    # celeryconfig names the queues on import, so a process of its own, on a prefix no
    # worker consumes.
    env = {**os.environ, "BILLING_AMQP_PREFIX": f"taskmsg{uuid.uuid4().hex[:8]}"}
    env["BILLING_BROKER_URL"] = stack.make_settings().broker_url
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.task_messages", *operation_ids],
        env=env,
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in message["properties"].items() if k not in PER_MESSAGE}
    properties["application_headers"] = {
        k: v for k, v in properties["application_headers"].items() if k not in PER_MESSAGE
    }
    headers = {k: v for k, v in message["headers"].items() if k not in PER_MESSAGE}
    return {**message, "properties": properties, "headers": headers}


def test_the_task_queue_sends_the_message_send_task_sends() -> None:
    by_celery, by_us = _sent_both_ways(["op-1", "op-2"])
    assert by_us["body"] == [
        [["op-1", "op-2"]],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert _without_ids(by_us) == _without_ids(by_celery)
    assert by_us["headers"]["root_id"] == by_us["headers"]["id"]
    assert by_us["properties"]["correlation_id"] == by_us["headers"]["id"]


def test_a_task_of_many_ids_shows_the_start_of_its_arguments_as_celery_does() -> None:
    ids = [f"operation-{i:04d}" for i in range(500)]
    by_celery, by_us = _sent_both_ways(ids)
    assert by_us["body"] == by_celery["body"]
    shown = by_us["headers"]["argsrepr"]
    assert len(shown) == limits.task_argsrepr_chars_max
    # Celery cuts by its own measure (1,036 characters here), with an ellipsis.
    assert by_celery["headers"]["argsrepr"].startswith(shown[:1_000])
