"""A periodic job that waited past its `expires` is dropped, not parked among poison messages."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from billing.config import Settings
from tests.support import stack

# Sent as beat sends it, with the deployment's queues declared and no worker
# consuming them; `expires` of 1 s instead of the schedule's few seconds.
_SEND_EXPIRING_JOB = """
import celeryconfig
from tasks.celery_app import app

with app.connection_for_write() as connection:
    channel = connection.default_channel
    for queue in (celeryconfig.tasks_dead_queue, celeryconfig.periodic_queue):
        queue.bind(channel).declare()
app.send_task("billing.expire_holds", expires=1)
"""


@pytest.fixture
def settings() -> Iterator[Settings]:
    """A deployment prefix of its own on the shared broker, with no worker."""
    settings = stack.make_settings()
    yield settings
    stack.delete_amqp_entities(settings)


def _depth(settings: Settings, queue: str) -> int:
    with Connection(settings.broker_url) as connection:
        declared = connection.channel().queue_declare(settings.amqp_name(queue), passive=True)
        return int(declared.message_count)


def test_an_expired_periodic_job_is_dropped_by_the_broker(settings: Settings) -> None:
    subprocess.run(
        [sys.executable, "-c", _SEND_EXPIRING_JOB],
        env=stack.environment(settings),
        check=True,
        timeout=60,
    )
    assert _depth(settings, "billing.periodic") == 1

    time.sleep(1.5)  # past the job's expiry; a quorum queue expires at its head
    stack.wait_until(
        lambda: _depth(settings, "billing.periodic") == 0, 10, "the expired job to be dropped"
    )
    assert _depth(settings, "billing.tasks.dead") == 0
