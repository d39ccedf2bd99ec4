"""Which queue each task goes to: ledger tasks queue up, short jobs never wait behind them."""

from __future__ import annotations

import pytest

import celeryconfig
from billing.adapters.celery_client import APPLY_OPERATION_TASK, APPLY_OPERATIONS_TASK
from tasks.celery_app import app


def queue_of(task_name: str) -> str:
    return str(app.amqp.router.route({}, task_name, args=(), kwargs={})["queue"].name)


@pytest.mark.parametrize(
    "task_name", sorted({job["task"] for job in celeryconfig.beat_schedule.values()})
)
def test_periodic_jobs_go_to_the_periodic_queue(task_name: str) -> None:
    assert queue_of(task_name) == celeryconfig.periodic_queue.name


def test_the_periodic_queue_drops_what_expires_instead_of_dead_lettering_it() -> None:
    assert "x-dead-letter-exchange" not in celeryconfig.periodic_queue.queue_arguments
    for job in celeryconfig.beat_schedule.values():
        assert job["options"]["expires"] > 0


@pytest.mark.parametrize("task_name", [APPLY_OPERATION_TASK, APPLY_OPERATIONS_TASK])
def test_ledger_tasks_go_to_the_tasks_queue(task_name: str) -> None:
    assert queue_of(task_name) == celeryconfig.tasks_queue.name
