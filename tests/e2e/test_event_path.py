"""The ledger task publishes its operations' events itself: no result task, no relay needed."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from billing.config import Settings
from tests.support import stack


@pytest.fixture
def lone_ledger_worker() -> Iterator[tuple[Settings, str]]:
    """A deployment of its own: the API and one worker that consumes only the ledger tasks.

    No worker takes the result tasks and no beat runs the outbox relay, so
    an event reaches `billing.responses` only if the ledger task sent it.
    """
    settings = stack.make_settings()
    stack.prepare_database(settings)
    port = stack.free_port()
    api = stack.start_api(settings, port)
    worker = stack.Process(
        f"ledger-only-{settings.amqp_prefix}",
        [
            sys.executable,
            "-m",
            "billing.cli",
            "worker",
            "--concurrency",
            "1",
            "--queues",
            settings.amqp_name("billing.tasks"),
            "--hostname",
            f"ledger-only-{settings.amqp_prefix}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        stack.environment(settings),
    )
    try:
        stack.wait_ready(worker)
        yield settings, f"http://127.0.0.1:{port}"
    finally:
        stack.discard_all([worker, api])
        stack.drop_database(settings)
        stack.delete_amqp_entities(settings)


def test_an_operations_event_is_published_by_the_task_that_applied_it(
    lone_ledger_worker: tuple[Settings, str],
) -> None:
    settings, api_url = lone_ledger_worker
    client = stack.Client(api_url, settings.api_tokens[0])
    client.create_account("alice")
    for operation_id in ("credit-1", "credit-2"):
        response = client.submit(
            "credits", {"operation_id": operation_id, "account_id": "alice", "amount": 100}
        )
        assert response.status_code == 202, response.text

    events = stack.EventLog(settings).wait_for(["credit-1", "credit-2"], timeout_s=30)
    for operation_id, copies in events.items():
        assert copies[0]["routing_key"] == "operation.credit.succeeded"
        assert copies[0]["body"]["operation_id"] == operation_id
