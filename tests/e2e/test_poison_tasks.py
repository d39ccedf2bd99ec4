"""Poison messages on the Celery task queue are refused without running and dead-lettered."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

from billing.config import Settings
from tests.support.stack import Client, wait_until


def _publish(settings: Settings, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    name = settings.amqp_name
    with Connection(settings.broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish(
            body,
            exchange=Exchange(name("billing.tasks"), type="topic", durable=True),
            routing_key=name("billing.tasks"),
            content_type=content_type,
            content_encoding="utf-8"
            if content_type != "application/x-python-serialize"
            else "binary",
            headers=headers,
            delivery_mode=2,
        )


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Take every message off the dead-letter queue: its task id and body."""
    from kombu import Queue

    found = []
    with Connection(settings.broker_url) as connection:
        queue = Queue(
            settings.amqp_name("billing.tasks.dead"),
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        bound = queue(connection.channel())
        while (message := bound.get(no_ack=False)) is not None:
            found.append({"id": message.headers.get("id"), "body": message.body})
            message.ack()
    return found


def _headers(task: str, task_id: str) -> dict[str, Any]:
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "test",
    }


def _json_body(args: list[Any], kwargs: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        [args, kwargs or {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    ).encode()


POISON = {
    "pickle": (
        pickle.dumps(([("x",)], {}, {})),
        "application/x-python-serialize",
        "billing.apply_operation",
    ),
    "not-json": (b"{this is not json", "application/json", "billing.apply_operation"),
    "unknown-content-type": (b"<xml/>", "application/xml", "billing.apply_operation"),
    "unknown-task": (_json_body(["op"]), "application/json", "billing.no_such_task"),
    "wrong-arguments": (_json_body([1, 2, 3]), "application/json", "billing.apply_operation"),
    "not-an-operation-id": (
        _json_body([["a list"]]),
        "application/json",
        "billing.apply_operation",
    ),
}


@pytest.mark.parametrize("kind", list(POISON))
def test_poison_task_message_is_dead_lettered_and_the_worker_keeps_serving(
    kind: str, settings: Settings, client: Client, new_id: Any
) -> None:
    body, content_type, task = POISON[kind]
    task_id = f"poison-{kind}-{uuid.uuid4().hex[:8]}"
    _publish(settings, body, content_type, _headers(task, task_id))
    collected: list[dict[str, Any]] = []

    def dead_lettered() -> bool:
        collected.extend(_dead_letters(settings))
        return any(m["id"] == task_id for m in collected)

    wait_until(dead_lettered, 30, f"the {kind} message to be dead-lettered", interval_s=0.1)
    account = new_id("acct")
    client.create_account(account)
    good = client.run("credits", {"operation_id": new_id("c"), "account_id": account, "amount": 7})
    assert good["status"] == "succeeded"
