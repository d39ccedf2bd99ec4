"""The AMQP intake: operations published to `billing.requests` are handled like HTTP ones."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue

from billing import limits
from billing.config import Settings
from tests.support import stack
from tests.support.stack import Client, EventLog, wait_until


def publish(settings: Settings, body: bytes | str) -> None:
    exchange = Exchange(settings.amqp_name("billing.requests"), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=exchange,
            routing_key="operation",
            content_type="application/json",
            delivery_mode=2,
        )


def take_dead_requests(settings: Settings) -> list[bytes]:
    queue = Queue(
        settings.amqp_name("billing.requests.dead"),
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )
    bodies = []
    with Connection(settings.broker_url) as connection:
        bound = queue(connection.channel())
        while (message := bound.get(no_ack=False)) is not None:
            bodies.append(message.body)
            message.ack()
    return bodies


def test_operations_published_to_the_intake_are_applied_and_published(
    settings: Settings, client: Client, events: EventLog, new_id: Any
) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    client.create_account(alice)
    client.create_account(bob)
    credit, transfer, hold, capture = new_id("c"), new_id("t"), new_id("h"), new_id("k")
    publish(
        settings,
        json.dumps({"type": "credit", "operation_id": credit, "account_id": alice, "amount": 1000}),
    )
    assert client.wait(credit, may_be_unknown=True)["status"] == "succeeded"
    publish(
        settings,
        json.dumps(
            {
                "type": "transfer",
                "operation_id": transfer,
                "source_account_id": alice,
                "destination_account_id": bob,
                "amount": 300,
            }
        ),
    )
    publish(
        settings,
        json.dumps({"type": "hold", "operation_id": hold, "account_id": alice, "amount": 200}),
    )
    assert client.wait(transfer, may_be_unknown=True)["status"] == "succeeded"
    assert client.wait(hold, may_be_unknown=True)["status"] == "succeeded"
    publish(
        settings,
        json.dumps({"type": "capture", "operation_id": capture, "hold_id": hold, "amount": 50}),
    )
    outcome = client.wait(capture, may_be_unknown=True)
    assert outcome["status"] == "succeeded"
    assert outcome["request"] == {"hold_id": hold, "amount": 50}
    assert client.account(alice)["posted"] == 650
    seen = events.wait_for([credit, transfer, hold, capture])
    assert seen[capture][0]["routing_key"] == "operation.capture.succeeded"


def test_a_repeat_over_the_intake_is_applied_once(
    settings: Settings, client: Client, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    credit = new_id("c")
    body = json.dumps({"type": "credit", "operation_id": credit, "account_id": alice, "amount": 5})
    for _ in range(3):
        publish(settings, body)
    assert client.wait(credit, may_be_unknown=True)["status"] == "succeeded"
    repeat = client.submit("credits", {"operation_id": credit, "account_id": alice, "amount": 5})
    assert repeat.status_code == 200
    wait_until(lambda: client.account(alice)["posted"] == 5, 10, "the credit")
    entries = client.get(f"/v1/accounts/{alice}/entries").json()["items"]
    assert len(entries) == 1


INVALID = {
    "not-json": b"{nope",
    "not-an-object": b"[1, 2]",
    "unknown-type": b'{"type": "refund", "operation_id": "x1", "account_id": "a", "amount": 1}',
    "no-type": b'{"operation_id": "x2", "account_id": "a", "amount": 1}',
    "float-amount": b'{"type": "credit", "operation_id": "x3", "account_id": "a", "amount": 1.0}',
    "missing-field": b'{"type": "transfer", "operation_id": "x4", "amount": 1}',
    "unknown-field": b'{"type": "debit", "operation_id": "x5", "account_id": "a", "amount": 1, '
    b'"currency": "USD"}',
    "bad-id": b'{"type": "credit", "operation_id": "no spaces", "account_id": "a", "amount": 1}',
    "capture-without-hold": b'{"type": "capture", "operation_id": "x6"}',
    "repeated-key": b'{"type": "credit", "operation_id": "x7", "account_id": "a", "amount": 1, '
    b'"amount": 1000}',
    "nested-65-deep": b'{"type": "credit", "operation_id": "x8", "account_id": "a", "amount": 1, '
    b'"note": ' + b'{"a": ' * 64 + b"1" + b"}" * 64 + b"}",
    "lone-surrogate-key": b'{"type": "credit", "operation_id": "x9", "account_id": "a", '
    b'"amount": 1, "\\ud800": 1}',
    "metadata-9-deep": b'{"type": "credit", "operation_id": "x10", "account_id": "a", '
    b'"amount": 1, "metadata": ' + b'{"a": ' * 8 + b"{}" + b"}" * 8 + b"}",
    "reversal-without-reverses": b'{"type": "reversal", "operation_id": "x11", "amount": 1}',
}


@pytest.mark.parametrize("kind", list(INVALID))
def test_an_invalid_intake_message_is_rejected_with_an_event_and_dead_lettered(
    kind: str, settings: Settings, client: Client, events: EventLog, new_id: Any
) -> None:
    marker = new_id("marker")
    body = INVALID[kind]
    if body.startswith(b"{") and body.endswith(b"}"):
        body = body[:-1] + f', "marker": "{marker}"}}'.encode()
    publish(settings, body)
    dead: list[bytes] = []
    wait_until(
        lambda: bool(dead.extend(take_dead_requests(settings)) or body in dead),
        20,
        f"the {kind} message in billing.requests.dead",
        interval_s=0.1,
    )

    original = body.decode()

    def rejected() -> list[dict[str, Any]]:
        events.drain()
        return [
            m
            for m in events.messages
            if m["routing_key"] == "request.rejected" and m["body"]["message"] == original
        ]

    wait_until(lambda: bool(rejected()), 20, "the request.rejected event")
    assert rejected()[0]["body"]["error"]["code"] == "validation_error"
    account = new_id("acct")
    client.create_account(account)
    good = new_id("good")
    publish(
        settings,
        json.dumps({"type": "credit", "operation_id": good, "account_id": account, "amount": 3}),
    )
    assert client.wait(good, may_be_unknown=True)["status"] == "succeeded"


def test_an_intake_message_reusing_an_id_with_another_body_is_rejected(
    settings: Settings, client: Client, events: EventLog, new_id: Any
) -> None:
    alice = new_id("alice")
    client.create_account(alice)
    credit = new_id("c")
    client.run("credits", {"operation_id": credit, "account_id": alice, "amount": 5})
    other = {"type": "credit", "operation_id": credit, "account_id": alice, "amount": 6}
    publish(settings, json.dumps(other))

    def conflict() -> bool:
        events.drain()
        return any(
            m["routing_key"] == "request.rejected"
            and m["body"]["error"]["code"] == "idempotency_conflict"
            and json.loads(m["body"]["message"]).get("operation_id") == credit
            for m in events.messages
        )

    wait_until(conflict, 20, "the idempotency_conflict rejection")
    assert client.account(alice)["posted"] == 5
    dead = [json.loads(b) for b in take_dead_requests(settings)]
    assert any(d.get("operation_id") == credit for d in dead)


def publish_all(settings: Settings, bodies: list[bytes]) -> None:
    exchange = Exchange(settings.amqp_name("billing.requests"), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection.channel())
        for body in bodies:
            producer.publish(
                body,
                exchange=exchange,
                routing_key="operation",
                content_type="application/json",
                delivery_mode=2,
            )


def publish_with(settings: Settings, body: bytes, **properties: Any) -> None:
    """Publish with AMQP properties of the test's choosing (headers, content encoding)."""
    exchange = Exchange(settings.amqp_name("billing.requests"), type="direct", durable=True)
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        channel.basic_publish(
            channel.prepare_message(body, **properties),
            exchange=exchange.name,
            routing_key="operation",
        )


def wait_dead(settings: Settings, body: bytes, what: str) -> None:
    dead: list[bytes] = []
    wait_until(
        lambda: bool(dead.extend(take_dead_requests(settings)) or body in dead),
        20,
        f"{what} in billing.requests.dead",
        interval_s=0.1,
    )


def wait_rejected(events: EventLog, matches: Any, what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        events.drain()
        found.extend(
            m["body"]
            for m in events.messages
            if m["routing_key"] == "request.rejected" and matches(m["body"])
        )
        return bool(found)

    wait_until(seen, 20, f"the request.rejected event of {what}")
    return found[0]


def assert_intake_applies(settings: Settings, client: Client, new_id: Any) -> None:
    """An honest operation published now is applied: the intake still runs."""
    account = new_id("after")
    client.create_account(account)
    good = new_id("good")
    body = {"type": "credit", "operation_id": good, "account_id": account, "amount": 3}
    publish(settings, json.dumps(body))
    assert client.wait(good, may_be_unknown=True)["status"] == "succeeded"


def test_arrays_nested_about_1000_deep_are_rejected_and_the_intake_goes_on(
    settings: Settings, client: Client, events: EventLog, workers: Any, new_id: Any
) -> None:
    # Near 1,000 levels Python's json reads an array it cannot write back
    # (the writer runs deeper in the stack): at some depth of this range the
    # rejection event that embedded the parsed message raised RecursionError
    # inside the consumer and stopped the worker. A marker in a string at the
    # bottom makes each message and its event this test's own.
    marker = new_id("deep")
    bodies = {
        f"{marker}/{depth}": b"[" * depth + json.dumps(f"{marker}/{depth}").encode() + b"]" * depth
        for depth in range(900, 1001)
    }
    publish_all(settings, list(bodies.values()))
    rejected: dict[str, dict[str, Any]] = {}

    def all_rejected() -> bool:
        events.drain()
        for m in events.messages:
            text = m["body"].get("message") if m["routing_key"] == "request.rejected" else None
            if isinstance(text, str) and marker in text:
                rejected[text.strip("[]").strip('"')] = m["body"]
        return set(rejected) == set(bodies)

    wait_until(all_rejected, 60, "a request.rejected event for every deep array")
    for label, body in bodies.items():
        event = rejected[label]
        assert event["error"]["code"] == "validation_error"
        assert "64 levels" in event["error"]["details"]["_body"][0]
        assert event["message"] == body.decode()
        assert event["message_truncated"] is False
    dead: list[bytes] = []
    wait_until(
        lambda: bool(
            dead.extend(take_dead_requests(settings)) or set(bodies.values()) <= set(dead)
        ),
        60,
        "every deep array in billing.requests.dead",
        interval_s=0.1,
    )
    assert_intake_applies(settings, client, new_id)
    assert all(worker.alive() for worker in workers.processes)


def test_a_message_over_the_size_limit_is_rejected_with_its_text_cut(
    settings: Settings, client: Client, events: EventLog, new_id: Any
) -> None:
    marker = new_id("large")
    padding = "x" * limits.intake_message_bytes_max
    body = json.dumps(
        {"marker": marker, "type": "credit", "operation_id": marker, "note": padding}
    ).encode()
    publish(settings, body)
    event = wait_rejected(events, lambda b: marker in b["message"], "the large message")
    assert event["error"]["code"] == "validation_error"
    assert f"{limits.intake_message_bytes_max} bytes" in event["error"]["details"]["_body"][0]
    assert event["message"] == body.decode()[: limits.rejected_message_chars_max]
    assert event["message_truncated"] is True
    wait_dead(settings, body, "the large message")
    assert client.get(f"/v1/operations/{marker}").status_code == 404
    assert_intake_applies(settings, client, new_id)


def test_a_compressed_message_is_refused_without_being_decompressed(
    settings: Settings, client: Client, events: EventLog, new_id: Any
) -> None:
    # kombu would inflate it before any check, however large it inflates to.
    account = new_id("zipped")
    client.create_account(account)
    credit = new_id("c")
    operation = {"type": "credit", "operation_id": credit, "account_id": account, "amount": 5}
    body = zlib.compress(json.dumps(operation).encode())
    publish_with(
        settings,
        body,
        content_type="application/json",
        headers={"compression": "application/x-gzip"},
    )
    event = wait_rejected(
        events,
        lambda b: b["message"] == body.decode("utf-8", errors="replace"),
        "the compressed message",
    )
    assert event["error"]["details"]["_body"] == [
        "A compressed body is not accepted; publish plain JSON."
    ]
    # The test reads the dead letter with kombu, which inflates it.
    wait_dead(settings, json.dumps(operation).encode(), "the compressed message")
    assert client.get(f"/v1/operations/{credit}").status_code == 404
    assert client.account(account)["posted"] == 0
    assert_intake_applies(settings, client, new_id)


BUGGED_INTAKE = stack.ROOT / "tests" / "support" / "bugged_intake"


def test_a_bug_while_handling_one_message_parks_it_and_the_intake_goes_on(
    settings: Settings, client: Client, events: EventLog, workers: Any, new_id: Any
) -> None:
    # The session's workers make way for one whose intake raises for a marked
    # message (tests/support/bugged_intake); they are started again after.
    for process in workers.processes:
        process.terminate()
    for process in workers.processes:
        process.stop()
    workers.processes.clear()
    pythonpath = os.pathsep.join([str(BUGGED_INTAKE), str(stack.ROOT)])
    bugged = stack.start_worker(settings, "bugged", extra_env={"PYTHONPATH": pythonpath})
    try:
        account = new_id("bug")
        client.create_account(account)
        doomed = new_id("doomed")
        body = json.dumps(
            {
                "type": "credit",
                "operation_id": doomed,
                "account_id": account,
                "amount": 5,
                "note": "force a bug",
            }
        ).encode()
        publish(settings, body)
        wait_dead(settings, body, "the message whose handling raised")
        assert_intake_applies(settings, client, new_id)
        assert bugged.alive()
        log = bugged.log_path.read_text(errors="replace")
        assert "handling a message failed" in log and "a bug forced by the test" in log
        scraped = client.get("/metrics").text
        assert 'billing_intake_messages_parked_total{reason="error"} 1.0' in scraped
        assert client.get(f"/v1/operations/{doomed}").status_code == 404
        assert client.account(account)["posted"] == 0
    finally:
        bugged.stop()
        for process in [workers.start(wait=False) for _ in range(3)]:
            stack.wait_ready(process)
