"""The Python client (billing_client) against the real stack: the API, workers and RabbitMQ."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from kombu import Connection

from billing.config import Settings
from billing_client import (
    BalanceAt,
    Client,
    ConflictError,
    ErrorCode,
    EventConsumer,
    HoldExpired,
    HoldStatus,
    NotFoundError,
    OperationEvent,
    Status,
    UnauthorizedError,
    ValidationError,
)
from billing_client.models import Event
from tests.support import stack
from tests.support.throwaway import ThrowawayPostgres

# `consume_until` takes events this many at a time (the client's prefetch).
BATCH_EVENTS = 32


@pytest.fixture(scope="module")
def sdk(settings: Settings, api_url: str, workers: Any) -> Iterator[Client]:
    with Client(api_url, settings.api_tokens[0]) as client:
        yield client


def funded(sdk: Client, account_id: str, amount: int, currency: str = "USD") -> None:
    sdk.create_account(account_id, currency)
    if amount:
        assert sdk.wait(sdk.credit(account_id, amount).operation_id).succeeded


def test_create_account_returns_the_account_and_the_same_one_when_repeated(
    sdk: Client, new_id: Any
) -> None:
    account_id = new_id("acct")
    created = sdk.create_account(account_id, "EUR", overdraft_limit=100, metadata={"n": 1})
    again = sdk.create_account(account_id, "EUR", overdraft_limit=100, metadata={"n": 1})
    assert (created.account_id, created.currency, created.overdraft_limit) == (
        account_id,
        "EUR",
        100,
    )
    assert again == created == sdk.account(account_id)
    assert (created.posted, created.held, created.available) == (0, 0, 0)


def test_an_account_that_exists_with_another_currency_raises_a_conflict_with_its_code(
    sdk: Client, new_id: Any
) -> None:
    account_id = new_id("acct")
    sdk.create_account(account_id, "EUR")
    with pytest.raises(ConflictError) as raised:
        sdk.create_account(account_id, "USD")
    assert (raised.value.status, raised.value.code) == (409, "account_conflict")


def test_reading_an_unknown_account_raises_not_found(sdk: Client, new_id: Any) -> None:
    with pytest.raises(NotFoundError) as raised:
        sdk.account(new_id("nobody"))
    assert raised.value.code == "not_found" and raised.value.message


def test_credit_debit_and_transfer_make_their_own_ids_and_wait_returns_the_outcome(
    sdk: Client, new_id: Any
) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    sdk.create_account(alice, "USD")
    sdk.create_account(bob, "USD")
    credit = sdk.credit(alice, 1_000)
    assert credit.status is Status.pending and credit.operation_id.startswith("op-")
    assert sdk.wait(credit.operation_id).balances[alice].posted == 1_000
    debit = sdk.wait(sdk.debit(alice, 300).operation_id)
    transfer = sdk.wait(sdk.transfer(alice, bob, 200).operation_id)
    assert debit.succeeded and debit.type == "debit" and debit.error is None
    assert transfer.succeeded and transfer.completed_at is not None
    assert transfer.request == {
        "source_account_id": alice,
        "destination_account_id": bob,
        "amount": 200,
    }
    assert transfer.balances[alice].available == 500
    assert transfer.balances[bob].available == 200
    assert len({credit.operation_id, debit.operation_id, transfer.operation_id}) == 3


def test_a_reversal_moves_a_transfer_back_and_a_second_one_beyond_it_fails(
    sdk: Client, new_id: Any
) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    funded(sdk, alice, 100)
    sdk.create_account(bob, "USD")
    transfer = sdk.wait(sdk.transfer(alice, bob, 100).operation_id)
    assert (transfer.reversed, transfer.reversals) == (0, [])
    refund = sdk.wait(sdk.reverse(transfer.operation_id, amount=60, metadata={"r": 1}).operation_id)
    assert refund.succeeded and refund.balances[bob].posted == 40
    assert refund.metadata == {"r": 1}
    assert (refund.reversed, refund.reversals) == (None, None), "a reversal is not reversible"
    over = sdk.wait(sdk.reverse(transfer.operation_id, amount=41).operation_id)
    assert over.error is not None and over.error.code is ErrorCode.amount_exceeds_reversible
    again = sdk.wait(sdk.reverse(refund.operation_id).operation_id)
    assert again.error is not None and again.error.code is ErrorCode.operation_not_reversible
    reversed_transfer = sdk.operation(transfer.operation_id)
    assert (reversed_transfer.reversed, reversed_transfer.reversals) == (60, [refund.operation_id])


def test_metadata_given_with_an_operation_comes_back_with_it_and_is_part_of_its_body(
    sdk: Client, new_id: Any
) -> None:
    payer, payee = new_id("payer"), new_id("payee")
    funded(sdk, payer, 100)
    sdk.create_account(payee, "USD")
    order = {"order": {"id": 7, "lines": ["a", "b"]}, "note": "été"}
    hold = sdk.wait(sdk.hold(payer, 80, destination_account_id=payee, metadata=order).operation_id)
    capture = sdk.wait(sdk.capture(hold.operation_id, metadata={"step": 2}).operation_id)
    assert (hold.metadata, capture.metadata) == (order, {"step": 2})
    assert capture.succeeded and capture.balances[payee].posted == 80
    assert sdk.operation(hold.operation_id).metadata == order
    assert "metadata" not in hold.request
    with pytest.raises(ConflictError) as raised:
        sdk.hold(
            payer, 80, destination_account_id=payee, metadata={}, operation_id=hold.operation_id
        )
    assert raised.value.code == "idempotency_conflict"


def test_a_debit_over_the_available_money_fails_with_insufficient_funds_as_a_value(
    sdk: Client, new_id: Any
) -> None:
    account_id = new_id("poor")
    funded(sdk, account_id, 100)
    outcome = sdk.wait(sdk.debit(account_id, 101).operation_id)
    assert outcome.failed and not outcome.succeeded
    assert outcome.error is not None and outcome.error.code is ErrorCode.insufficient_funds
    assert outcome.error.message
    assert sdk.account(account_id).posted == 100


def test_a_transfer_across_currencies_fails_with_currency_mismatch(
    sdk: Client, new_id: Any
) -> None:
    source, destination = new_id("usd"), new_id("eur")
    funded(sdk, source, 100, "USD")
    sdk.create_account(destination, "EUR")
    outcome = sdk.wait(sdk.transfer(source, destination, 50).operation_id)
    assert outcome.error is not None and outcome.error.code == "currency_mismatch"


def test_the_same_operation_id_again_returns_the_operation_and_another_body_conflicts(
    sdk: Client, new_id: Any
) -> None:
    account_id, operation_id = new_id("again"), new_id("credit")
    sdk.create_account(account_id, "USD")
    first = sdk.credit(account_id, 10, operation_id=operation_id)
    assert first.operation_id == operation_id
    sdk.wait(operation_id)
    repeat = sdk.credit(account_id, 10, operation_id=operation_id)
    assert repeat.succeeded and repeat.operation_id == operation_id
    with pytest.raises(ConflictError) as raised:
        sdk.credit(account_id, 11, operation_id=operation_id)
    assert raised.value.code == "idempotency_conflict"
    assert sdk.account(account_id).posted == 10


def test_a_malformed_amount_raises_a_validation_error_that_names_the_field(
    sdk: Client, new_id: Any
) -> None:
    with pytest.raises(ValidationError) as raised:
        sdk.credit(new_id("acct"), 0)
    assert raised.value.status == 422 and "amount" in raised.value.details


def test_a_wrong_token_raises_unauthorized(api_url: str, new_id: Any) -> None:
    with Client(api_url, "not-a-token") as stranger, pytest.raises(UnauthorizedError) as raised:
        stranger.account(new_id("acct"))
    assert (raised.value.status, raised.value.code) == (401, "unauthorized")


def test_holds_capture_in_part_release_and_list_by_status(sdk: Client, new_id: Any) -> None:
    payer, payee = new_id("payer"), new_id("payee")
    funded(sdk, payer, 1_000)
    sdk.create_account(payee, "USD")
    two_phase = sdk.hold(payer, 400, destination_account_id=payee, expires_in_s=3600)
    assert sdk.wait(two_phase.operation_id).balances[payer].held == 400
    hold_id = two_phase.operation_id
    part = sdk.wait(sdk.capture(hold_id, amount=100, final=False).operation_id)
    assert part.succeeded and part.balances[payee].posted == 100
    rest = sdk.wait(sdk.capture(hold_id).operation_id)
    assert rest.succeeded and rest.balances[payee].posted == 400
    plain = sdk.hold(payer, 50, operation_id=new_id("plain-hold"))
    sdk.wait(plain.operation_id)
    released = sdk.wait(sdk.release(plain.operation_id).operation_id)
    assert released.succeeded and released.balances[payer].held == 0
    captured = list(sdk.holds(payer, status="captured"))
    assert [h.hold_id for h in captured] == [hold_id]
    assert captured[0].status is HoldStatus.captured and captured[0].captured == 400
    assert captured[0].destination_account_id == payee and captured[0].expires_at is not None
    assert {h.hold_id: h.status for h in sdk.holds(payer)} == {
        hold_id: HoldStatus.captured,
        plain.operation_id: HoldStatus.released,
    }


def test_capturing_a_hold_that_does_not_exist_fails_with_hold_not_found(
    sdk: Client, new_id: Any
) -> None:
    outcome = sdk.wait(sdk.capture(new_id("no-hold")).operation_id)
    assert outcome.error is not None and outcome.error.code is ErrorCode.hold_not_found


def test_entries_are_read_across_pages_newest_first(sdk: Client, new_id: Any) -> None:
    account_id = new_id("pages")
    sdk.create_account(account_id, "USD")
    credits = [sdk.credit(account_id, amount) for amount in (1, 2, 3, 4, 5)]
    for credit in credits:
        sdk.wait(credit.operation_id)
    entries = list(sdk.entries(account_id, page_size=2))
    assert sorted(e.amount for e in entries) == [1, 2, 3, 4, 5]
    assert {e.operation_id for e in entries} == {c.operation_id for c in credits}
    assert [e.entry_id for e in entries] == sorted((e.entry_id for e in entries), reverse=True)
    assert entries[0].posted_after == 15


def test_operations_of_an_account_are_listed_across_pages_newest_first_and_filtered(
    sdk: Client, new_id: Any
) -> None:
    alice, bob, stranger = new_id("alice"), new_id("bob"), new_id("stranger")
    funded(sdk, alice, 100)
    sdk.create_account(bob, "USD")
    funded(sdk, stranger, 5)
    sent = [sdk.transfer(alice, bob, 10), sdk.debit(alice, 20), sdk.debit(alice, 1_000)]
    for operation in sent:
        sdk.wait(operation.operation_id)
    listed = list(sdk.operations(account_id=alice, page_size=2))
    assert [o.type for o in listed] == ["debit", "debit", "transfer", "credit"]
    assert [o.operation_id for o in listed[:3]] == [o.operation_id for o in reversed(sent)]
    assert listed[0].failed and listed[0].error is not None
    assert [o.operation_id for o in sdk.operations(account_id=bob)] == [sent[0].operation_id]
    failed = sdk.operations(account_id=alice, type="debit", status="failed", page_size=1)
    assert [o.operation_id for o in failed] == [sent[2].operation_id]
    later = sdk.operations(account_id=alice, since=listed[1].accepted_at)
    assert [o.operation_id for o in later] == [sent[2].operation_id, sent[1].operation_id]


def test_balances_at_a_moment_are_those_after_every_entry_until_then(
    sdk: Client, new_id: Any
) -> None:
    account_id = new_id("history")
    before = datetime.now(UTC)
    funded(sdk, account_id, 100)
    between = datetime.now(UTC)
    sdk.wait(sdk.hold(account_id, 30).operation_id)
    after = datetime.now(UTC)
    assert sdk.balances_at(account_id, before) == BalanceAt(account_id, 0, 0, 0, before)
    assert sdk.balances_at(account_id, between) == BalanceAt(account_id, 100, 0, 100, between)
    assert sdk.balances_at(account_id, after) == BalanceAt(account_id, 100, 30, 70, after)


def test_a_batch_gives_each_item_an_id_and_its_own_result(sdk: Client, new_id: Any) -> None:
    alice, bob = new_id("alice"), new_id("bob")
    sdk.create_account(alice, "USD")
    sdk.create_account(bob, "USD")
    items = sdk.batch(
        [
            {"type": "credit", "account_id": alice, "amount": 500},
            {
                "type": "transfer",
                "source_account_id": alice,
                "destination_account_id": bob,
                "amount": 200,
            },
            {"type": "debit", "account_id": bob, "amount": -1},
        ]
    )
    assert [item.result for item in items] == ["accepted", "accepted", "validation_error"]
    assert items[2].operation is None and items[2].error is not None
    assert all(item.operation_id for item in items)
    transfer = items[1].operation
    assert transfer is not None
    assert sdk.wait(transfer.operation_id).balances[bob].posted == 200


class FlakyProxy:
    """A real HTTP server in front of the API: its first answers fail, then it forwards.

    `fail` is "503" (the contract's unavailable answer) or "drop" (the
    connection closed without an answer); every request body is recorded.
    """

    def __init__(self, upstream: str, failures: int, fail: str) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._failures_left = failures
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.bodies.append(json.loads(body))
                    failing = proxy._failures_left > 0
                    proxy._failures_left -= 1
                if failing and fail == "drop":
                    self.close_connection = True
                    return
                if failing:
                    self._answer(
                        503,
                        b'{"error": {"code": "unavailable", "message": "retry shortly"}}',
                        {"Retry-After": "0"},
                    )
                    return
                forwarded = requests.post(
                    upstream + self.path,
                    data=body,
                    headers={
                        "Authorization": self.headers["Authorization"],
                        "Content-Type": "application/json",
                    },
                    timeout=30,
                )
                self._answer(forwarded.status_code, forwarded.content, {})

            def _answer(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("fail", ["503", "drop"])
def test_a_503_or_a_dropped_connection_is_retried_with_the_same_operation_id(
    sdk: Client, settings: Settings, api_url: str, new_id: Any, fail: str
) -> None:
    account_id = new_id("retried")
    sdk.create_account(account_id, "USD")
    proxy = FlakyProxy(api_url, failures=2, fail=fail)
    try:
        with Client(proxy.url, settings.api_tokens[0]) as through_proxy:
            accepted = through_proxy.credit(account_id, 70)
    finally:
        proxy.close()
    assert accepted.status is Status.pending
    assert len(proxy.bodies) == 3
    assert {body["operation_id"] for body in proxy.bodies} == {accepted.operation_id}
    assert sdk.wait(accepted.operation_id).succeeded
    assert sdk.account(account_id).posted == 70


def test_a_credit_sent_while_the_database_is_down_is_retried_until_it_is_back(
    settings: Settings, new_id: Any
) -> None:
    """The real thing: a PostgreSQL of the test's own, stopped, so the API answers 503."""
    suffix = uuid.uuid4().hex[:6]
    postgres = ThrowawayPostgres(f"client{suffix}", stack.free_port())
    outage = Settings(
        database_url=postgres.url,
        broker_url=settings.broker_url,
        api_tokens=(f"outage-token-{suffix}-{suffix}",),
        amqp_prefix=f"outage{suffix}",
    )
    processes: list[stack.Process] = []
    try:
        postgres.create()
        stack.prepare_database(outage)
        port = stack.free_port()
        # The worker starts while the API does.
        processes.append(stack.start_worker(outage, "ow1", concurrency=1, wait=False))
        processes.append(stack.start_api(outage, port))
        stack.wait_ready(processes[0])
        api_log = processes[1].log_path
        with Client(f"http://127.0.0.1:{port}", outage.api_tokens[0]) as client:
            client.create_account("alice", "USD")
            postgres.stop()
            answers: list[Any] = []
            sender = threading.Thread(target=lambda: answers.append(client.credit("alice", 70)))
            sender.start()
            stack.wait_until(
                lambda: "dependency unavailable" in api_log.read_text(errors="replace"),
                30,
                "the API to answer 503 while the database is down",
            )
            postgres.start()
            sender.join(timeout=120)
            (accepted,) = answers
            assert client.wait(accepted.operation_id).succeeded
            assert client.account("alice").posted == 70
    finally:
        stack.discard_all(processes)
        stack.delete_amqp_entities(outage)
        postgres.drop()


def consume_until(
    consumer: EventConsumer, wanted: Callable[[Event], bool], limit: int = 1_000
) -> list[Event]:
    """Events (each acknowledged) up to the first wanted one; bounded in number and in waiting.

    Taken a prefetch's worth at a time (one at a time, each call would take
    a prefetch and give all but one back); events after the wanted one in the
    last batch are acknowledged too, as any consumer of the queue would.
    """
    seen: list[Event] = []
    idle_deadline = time.monotonic() + 60
    while len(seen) < limit:
        handled = consumer.consume(seen.append, limit=BATCH_EVENTS, idle_timeout_s=0.5)
        found = next((i for i, event in enumerate(seen) if wanted(event)), None)
        if found is not None:
            return seen[: found + 1]
        if handled:
            idle_deadline = time.monotonic() + 60
        assert time.monotonic() < idle_deadline, "no event came for 60 s"
    raise AssertionError(f"no wanted event among {len(seen)}")


def test_the_events_helper_reads_billing_responses_as_typed_events(
    sdk: Client, settings: Settings, new_id: Any
) -> None:
    account_id = new_id("evented")
    sdk.create_account(account_id, "USD")
    with EventConsumer(settings.broker_url, prefix=settings.amqp_prefix) as consumer:
        # The events of the tests before this one are taken (and acknowledged) first:
        # there may be thousands, ahead of this test's event.
        consumer.consume(lambda _: None, idle_timeout_s=0.5)
        credit = sdk.credit(account_id, 42)
        seen = consume_until(
            consumer,
            lambda e: (
                isinstance(e, OperationEvent) and e.operation.operation_id == credit.operation_id
            ),
        )
    event = seen[-1]
    assert isinstance(event, OperationEvent)
    assert event.routing_key == "operation.credit.succeeded"
    assert event.message_id == credit.operation_id
    assert event.operation.succeeded and event.operation.balances[account_id].posted == 42


def delete_queue(settings: Settings, queue: str) -> None:
    with Connection(settings.broker_url) as connection:
        connection.default_channel.queue_delete(queue)


def test_an_event_whose_handler_raises_is_not_acknowledged_and_comes_again(
    sdk: Client, settings: Settings, new_id: Any
) -> None:
    queue = f"{settings.amqp_prefix}.client-test.{uuid.uuid4().hex[:8]}"
    account_id = new_id("redelivered")
    sdk.create_account(account_id, "USD")
    consumer = EventConsumer(
        settings.broker_url,
        prefix=settings.amqp_prefix,
        queue=queue,
        routing_keys=["operation.debit.*"],
    )
    with consumer:
        consumer.consume(lambda _: None, idle_timeout_s=0.2)  # declares and binds the queue
        debit = sdk.debit(account_id, 5)  # fails: nothing on the account

        def refuse(event: Event) -> None:
            raise RuntimeError("the caller's code failed")

        with pytest.raises(RuntimeError):
            consumer.consume(refuse, idle_timeout_s=60)
        seen: list[Event] = []
        assert consumer.consume(seen.append, limit=1, idle_timeout_s=60) == 1
        assert consumer.consume(seen.append, idle_timeout_s=0.5) == 0, "acknowledged: gone"
    delete_queue(settings, queue)
    (event,) = seen
    assert isinstance(event, OperationEvent) and event.redelivered
    assert event.routing_key == "operation.debit.failed"
    assert event.operation.operation_id == debit.operation_id
    assert event.operation.error is not None
    assert event.operation.error.code is ErrorCode.insufficient_funds


def test_an_expired_hold_comes_as_a_typed_hold_expired_event(
    sdk: Client, settings: Settings, beat: Any, new_id: Any
) -> None:
    queue = f"{settings.amqp_prefix}.client-test.{uuid.uuid4().hex[:8]}"
    account_id = new_id("expiring")
    funded(sdk, account_id, 100)
    consumer = EventConsumer(
        settings.broker_url, prefix=settings.amqp_prefix, queue=queue, routing_keys=["hold.*"]
    )
    with consumer:
        consumer.consume(lambda _: None, idle_timeout_s=0.2)
        hold = sdk.hold(account_id, 60, expires_in_s=1)
        seen = consume_until(
            consumer, lambda e: isinstance(e, HoldExpired) and e.hold.hold_id == hold.operation_id
        )
    delete_queue(settings, queue)
    event = seen[-1]
    assert isinstance(event, HoldExpired) and event.routing_key == "hold.expired"
    assert event.hold.status is HoldStatus.expired
    assert event.hold.account_id == account_id and event.hold.amount == 60


def test_the_feed_numbers_every_event_from_1_and_resumes_after_a_consumers_last_event_seq(
    sdk: Client, settings: Settings, new_id: Any
) -> None:
    queue = f"{settings.amqp_prefix}.client-test.{uuid.uuid4().hex[:8]}"
    account_id = new_id("fed")
    sdk.create_account(account_id, "USD")
    consumer = EventConsumer(
        settings.broker_url,
        prefix=settings.amqp_prefix,
        queue=queue,
        routing_keys=["operation.credit.*"],
    )
    queued: dict[str, OperationEvent] = {}
    with consumer:
        consumer.declare()
        credits = [sdk.credit(account_id, n, metadata={"n": n}) for n in (1, 2, 3)]
        ids = {credit.operation_id for credit in credits}

        def keep(event: Event) -> None:
            if isinstance(event, OperationEvent) and event.message_id in ids:
                queued[event.operation.operation_id] = event

        for _ in range(1_000):
            if len(queued) == len(ids):
                break
            assert consumer.consume(keep, limit=1, idle_timeout_s=60) == 1, "no event came"
    delete_queue(settings, queue)
    by_seq = sorted(queued.values(), key=lambda event: event.event_seq or 0)
    first, *later = by_seq
    assert first.event_seq is not None

    # From 0: numbered from 1 without a gap, across pages (the session's feed may be long:
    # its first pages only).
    start = list(itertools.islice(sdk.events(page_size=100), 250))
    assert [item.event_seq for item in start] == list(range(1, len(start) + 1))
    assert len(start) >= min(250, first.event_seq)

    # From the first credit's number, as a consumer that lost its queue after it: the
    # other two, the same events as their copies on the queue, then on to the feed's end.
    rest = list(sdk.events(first.event_seq, page_size=2))
    assert [item.event_seq for item in rest] == [first.event_seq + 1 + n for n in range(len(rest))]
    caught_up = [item.event for item in rest if item.message_id in ids]
    assert caught_up == [dataclasses.replace(event, redelivered=False) for event in later]
    assert sorted(event.operation.metadata["n"] for event in by_seq) == [1, 2, 3]
