"""`billing dead-letters`: dead messages are listed, never lost, and replayed where they came from.

The dead-letter queues are shared with the other tests of the session, so
every test finds its own messages by task id or operation id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from kombu import Connection, Exchange, Producer
from sqlalchemy import text

from billing.adapters.dead_letters import DeadLetter, list_dead_letters
from billing.config import Settings
from tests.support import refusals, stack
from tests.support.stack import Client, wait_until

UNKNOWN_TASK = "billing.no_such_task"


def dead_letters(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `billing dead-letters ...` as an operator would, against the test run's broker prefix."""
    return subprocess.run(
        [sys.executable, "-m", "billing.cli", "dead-letters", *args],
        env=stack.environment(settings),
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def publish_task(settings: Settings, task: str, task_id: str, args: list[Any]) -> None:
    """A Celery task message, published the way Celery's own client publishes one."""
    name = settings.amqp_name
    body = json.dumps(
        [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": "{}",
        "origin": "test",
    }
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=Exchange(name("billing.tasks"), type="topic", durable=True),
            routing_key=name("billing.tasks"),
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            delivery_mode=2,
        )


def dead(settings: Settings, which: str, some_id: str) -> list[DeadLetter]:
    """The dead messages with this task id or operation id (looked at, and left in place)."""
    return list_dead_letters(settings, which, limit=1_000, ids=[some_id])[1]


def wait_dead(settings: Settings, which: str, some_id: str, deaths: int = 1) -> DeadLetter:
    found: list[DeadLetter] = []

    def there() -> bool:
        found[:] = [m for m in dead(settings, which, some_id) if m.deaths >= deaths]
        return bool(found)

    wait_until(there, 30, f"{some_id} in the {which} dead-letter queue", interval_s=0.1)
    return found[0]


def test_list_shows_why_a_task_died_and_where_it_came_from_and_leaves_it_in_the_queue(
    settings: Settings, client: Client, new_id: Any
) -> None:
    task_id, operation_id = new_id("unknown-task"), new_id("op")
    publish_task(settings, UNKNOWN_TASK, task_id, [operation_id])
    wait_dead(settings, "tasks", task_id)

    listed = dead_letters(settings, "list", "--queue", "tasks", "--json", "--limit", "1000")

    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["queue"] == settings.amqp_name("billing.tasks.dead")
    [message] = [m for m in document["messages"] if m["task_id"] == task_id]
    assert message["task"] == UNKNOWN_TASK
    assert message["operation_ids"] == [operation_id]
    assert message["reason"] == "rejected"
    assert message["first_death_reason"] == "rejected"
    assert message["died_in"] == settings.amqp_name("billing.tasks")
    assert message["origin"] == {
        "exchange": settings.amqp_name("billing.tasks"),
        "routing_key": settings.amqp_name("billing.tasks"),
    }
    assert message["content_type"] == "application/json"
    assert operation_id in message["body"]
    [still_there] = dead(settings, "tasks", task_id)
    assert (still_there.deaths, still_there.body) == (1, message["body"])


def test_list_shows_a_refused_intake_request_with_its_operation_id(
    settings: Settings, client: Client, new_id: Any
) -> None:
    operation_id = new_id("float")
    body = {"type": "credit", "operation_id": operation_id, "account_id": "a", "amount": 1.5}
    exchange = Exchange(settings.amqp_name("billing.requests"), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            json.dumps(body), exchange=exchange, routing_key="operation", delivery_mode=2
        )
    wait_dead(settings, "requests", operation_id)

    listed = dead_letters(settings, "list", "--queue", "requests", "--id", operation_id)

    assert listed.returncode == 0, listed.stderr
    assert f"operation {operation_id}" in listed.stdout
    assert f"rejected in {settings.amqp_name('billing.requests')}" in listed.stdout
    assert f"exchange '{settings.amqp_name('billing.requests')}', routing key 'operation'" in (
        listed.stdout
    )


def test_replay_sends_a_dead_task_back_to_the_workers_which_apply_it(
    settings: Settings, client: Client, engine: Any, new_id: Any
) -> None:
    """A ledger task that crashed on a fault is dead-lettered; once the fault is fixed, replay it.

    The fault is simulated by a database that refuses both the operation's
    entries and its outcome (triggers): the ledger task cannot even end it
    failed, so it raises, Celery rejects the task and RabbitMQ dead-letters
    it. Once the triggers are gone, the replay applies it.
    """
    account, operation_id, task_id = new_id("acct"), new_id("credit"), new_id("task")
    client.create_account(account)
    refusals.refuse(engine, "entries", operation_id)
    refusals.refuse(engine, "operations", operation_id)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO operations (operation_id, type, request) "
                    "VALUES (:id, 'credit', CAST(:request AS jsonb))"
                ),
                {"id": operation_id, "request": json.dumps({"account_id": account, "amount": 40})},
            )
        publish_task(settings, "billing.apply_operation", task_id, [operation_id])
        assert wait_dead(settings, "tasks", task_id).reason == "rejected"
        assert client.get(f"/v1/operations/{operation_id}").json()["status"] == "pending"
    finally:
        refusals.allow(engine, "entries", operation_id)
        refusals.allow(engine, "operations", operation_id)

    # Nothing else enqueues this operation (the recovery sweep waits 30 s):
    # only the replayed task can apply it.
    replayed = dead_letters(settings, "replay", "--queue", "tasks", "--id", operation_id)

    assert replayed.returncode == 0, replayed.stderr
    assert f"task billing.apply_operation id {task_id}" in replayed.stdout
    assert "replayed 1 message(s)" in replayed.stdout
    assert dead(settings, "tasks", task_id) == []
    assert client.wait(operation_id)["status"] == "succeeded"
    assert client.account(account)["posted"] == 40
    assert dead(settings, "tasks", task_id) == []


def test_a_dry_run_shows_what_would_move_and_moves_nothing(
    settings: Settings, client: Client, new_id: Any
) -> None:
    task_id = new_id("dry-run")
    publish_task(settings, UNKNOWN_TASK, task_id, [new_id("op")])
    wait_dead(settings, "tasks", task_id)

    shown = dead_letters(settings, "replay", "--id", task_id, "--dry-run")

    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if task_id in line]
    assert line.startswith("would replay  #")
    assert line.endswith(
        f"-> exchange '{settings.amqp_name('billing.tasks')}', routing key "
        f"'{settings.amqp_name('billing.tasks')}'"
    )
    assert "dry run: would replay 1 message(s); nothing was moved" in shown.stdout
    # Moved, it would have left the dead queue or died a second time.
    [still_there] = dead(settings, "tasks", task_id)
    assert still_there.deaths == 1


def test_replaying_a_poison_task_dead_letters_it_again(
    settings: Settings, client: Client, new_id: Any
) -> None:
    task_id = new_id("poison-again")
    publish_task(settings, UNKNOWN_TASK, task_id, [new_id("op")])
    wait_dead(settings, "tasks", task_id)

    replayed = dead_letters(settings, "replay", "--id", task_id)

    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 message(s)" in replayed.stdout
    again = wait_dead(settings, "tasks", task_id, deaths=2)
    assert again.x_death[0]["count"] == 2
    found = dead(settings, "tasks", task_id)
    assert len(found) == 1, found


def test_a_request_the_intake_parked_itself_has_no_origin_and_stays_put(
    settings: Settings, client: Client, new_id: Any
) -> None:
    account, operation_id = new_id("acct"), new_id("credit")
    client.create_account(account)
    client.run("credits", {"operation_id": operation_id, "account_id": account, "amount": 5})
    conflicting = {"type": "credit", "operation_id": operation_id, "account_id": account}
    exchange = Exchange(settings.amqp_name("billing.requests"), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            json.dumps({**conflicting, "amount": 6}),
            exchange=exchange,
            routing_key="operation",
            delivery_mode=2,
        )
    parked = wait_dead(settings, "requests", operation_id, deaths=0)
    assert (parked.origin, parked.rejection) == (None, "idempotency_conflict")

    replayed = dead_letters(settings, "replay", "--queue", "requests", "--id", operation_id)

    assert replayed.returncode == 0, replayed.stderr
    assert "skipped" in replayed.stdout
    assert "replayed 0 message(s)" in replayed.stdout
    assert len(dead(settings, "requests", operation_id)) == 1
