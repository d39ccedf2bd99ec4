"""The service layer's doors and its way out, against the in-memory unit of work: opening
accounts, accepting operations (idempotency and conflicts), enqueueing them, and publishing
their events (`publish_events`, `relay_events`)."""

from __future__ import annotations

import pytest

from billing import limits, representation, service
from billing.domain import NewAccount, Operation, OperationType
from billing.ports import Event, TransientError
from billing.service import Acceptance
from tests.unit.service_driver import Service, credit

# --- accounts ------------------------------------------------------------------------


def test_opening_an_account_creates_it_empty_with_its_currency_counter_account(
    ledger: Service,
) -> None:
    outcome, row = service.open_account(NewAccount("alice", "EUR", 50, {"tier": 1}), ledger.uow)
    assert outcome is Acceptance.accepted
    assert (row["currency"], row["posted"], row["held"], row["overdraft_limit"]) == (
        "EUR",
        0,
        0,
        50,
    )
    assert row["metadata"] == {"tier": 1}
    assert ledger.uow.committed.accounts["@external:EUR"].is_external


@pytest.mark.parametrize(
    ("again", "outcome"),
    [
        (NewAccount("alice", "EUR", 50, {"tier": 1}), Acceptance.repeated),
        (NewAccount("alice", "EUR", 50, {"tier": 1.0}), Acceptance.repeated),
        (NewAccount("alice", "USD", 50, {"tier": 1}), Acceptance.conflict),
        (NewAccount("alice", "EUR", 0, {"tier": 1}), Acceptance.conflict),
        (NewAccount("alice", "EUR", 50, {"tier": 2}), Acceptance.conflict),
        (NewAccount("alice", "EUR", 50, {"tier": True}), Acceptance.conflict),
    ],
)
def test_opening_an_account_again_is_a_repeat_only_with_the_same_values(
    ledger: Service, again: NewAccount, outcome: Acceptance
) -> None:
    service.open_account(NewAccount("alice", "EUR", 50, {"tier": 1}), ledger.uow)
    assert service.open_account(again, ledger.uow)[0] is outcome
    assert ledger.uow.committed.accounts["alice"].currency == "EUR"


# --- accepting operations ---------------------------------------------------------------


def test_an_accepted_operation_is_recorded_pending_and_applies_nothing_yet(
    ledger: Service,
) -> None:
    ledger.open("alice")
    outcome, record = service.accept_operation(credit("c1", "alice", 5), ledger.uow)
    assert outcome is Acceptance.accepted
    assert record.operation.status.value == "pending"
    assert record.accepted_at == ledger.clock.now
    assert (record.balances, record.completed_at, record.batch_id) == (None, None, None)
    assert ledger.balances("alice") == (0, 0, 0)


def test_accepting_the_same_operation_again_answers_the_record_as_it_is_now(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    outcome, record = service.accept_operation(credit("c1", "alice", 5), ledger.uow)
    assert outcome is Acceptance.repeated
    assert record.operation.status.value == "succeeded"


def test_an_operation_id_of_a_credit_cannot_be_reused_for_a_debit(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "shared", account_id="alice", amount=5)
    debit = Operation("shared", OperationType.debit, {"account_id": "alice", "amount": 5})
    outcome, record = service.accept_operation(debit, ledger.uow)
    assert outcome is Acceptance.conflict
    assert record.operation.type is OperationType.credit


def test_accepting_a_batch_records_each_operation_with_its_place(ledger: Service) -> None:
    operations = [credit(f"c{n}", "alice", 1) for n in range(3)]
    results = service.accept_operations(operations, ledger.uow, as_batch=True)
    assert [a for a, _ in results] == [Acceptance.accepted] * 3
    batch_ids = {r.batch_id for _, r in results}
    assert len(batch_ids) == 1 and None not in batch_ids
    assert [r.batch_position for _, r in results] == [1, 2, 3]


def test_accepting_operations_judges_each_against_what_is_recorded(ledger: Service) -> None:
    service.accept_operation(credit("old", "alice", 1), ledger.uow)
    operations = [credit("old", "alice", 1), credit("new", "alice", 1), credit("old", "bob", 1)]
    results = service.accept_operations(operations, ledger.uow)
    assert [a for a, _ in results] == [
        Acceptance.repeated,
        Acceptance.accepted,
        Acceptance.conflict,
    ]


def test_the_same_id_twice_in_one_request_is_recorded_once_as_first_given(
    ledger: Service,
) -> None:
    operations = [credit("c1", "alice", 1), credit("c1", "alice", 1), credit("c1", "alice", 2)]
    results = service.accept_operations(operations, ledger.uow, as_batch=True)
    assert [a for a, _ in results] == [
        Acceptance.accepted,
        Acceptance.repeated,
        Acceptance.conflict,
    ]
    assert ledger.record("c1").operation.request["amount"] == 1


def test_accept_and_enqueue_enqueues_only_the_new_operations_in_groups(
    ledger: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "enqueue_group_size_max", 2)
    service.accept_operation(credit("old", "alice", 1), ledger.uow)
    operations = [credit(i, "alice", 1) for i in ("n1", "old", "n2", "n3")]
    service.accept_and_enqueue(operations, ledger.uow, ledger.enqueue)
    assert ledger.enqueued == [["n1", "n2"], ["n3"]]


def test_accept_and_enqueue_of_nothing_touches_neither_database_nor_queue(
    ledger: Service,
) -> None:
    commits = ledger.uow.commits
    assert service.accept_and_enqueue([], ledger.uow, ledger.enqueue) == []
    assert (ledger.uow.commits, ledger.enqueued) == (commits, [])


def test_an_operation_whose_enqueue_fails_stays_recorded_for_the_sweep(ledger: Service) -> None:
    def broker_down(operation_ids: list[str]) -> None:
        raise TransientError("broker down")

    with pytest.raises(TransientError):
        service.accept_and_enqueue([credit("c1", "alice", 1)], ledger.uow, broker_down)
    assert ledger.outcome("c1") == ("pending", None)


# --- publishing events ------------------------------------------------------------------


def test_publish_events_sends_each_named_event_with_its_rendered_body_and_marks_it(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    assert service.publish_events(["c1"], ledger.uow, ledger.publisher) == 1
    (event,) = ledger.publisher.published
    assert event.routing_key == "operation.credit.succeeded"
    assert event.body == {
        **representation.render_operation(ledger.record("c1")),
        "event_seq": 1,
        "schema_version": 1,
    }
    assert ledger.unpublished() == []


def test_publish_events_reads_and_marks_in_one_transaction(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    commits = ledger.uow.commits
    service.publish_events(["c1"], ledger.uow, ledger.publisher)
    assert ledger.uow.commits - commits == 1


def test_an_event_is_published_with_the_feed_number_its_ledger_transaction_committed(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    ledger.run("credit", "c2", account_id="alice", amount=5)
    committed_numbers: list[dict[int, int]] = []

    class Publisher:
        def publish(self, events: list[Event]) -> None:
            committed_numbers.append(dict(ledger.uow.committed.event_seqs))
            assert [e.body["event_seq"] for e in events if isinstance(e.body, dict)] == [2]

    service.publish_events(["c1"], ledger.uow, ledger.publisher)
    service.publish_events(["c2"], ledger.uow, Publisher())
    assert sorted(committed_numbers[0].values()) == [1, 2]


def test_publish_events_publishes_an_event_once_and_nothing_unknown(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    service.publish_events(["c1"], ledger.uow, ledger.publisher)
    assert service.publish_events(["c1", "ghost"], ledger.uow, ledger.publisher) == 0
    assert len(ledger.publisher.published) == 1


def test_events_the_broker_did_not_take_stay_in_the_outbox(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    ledger.publisher.down = True
    with pytest.raises(TransientError):
        service.publish_events(["c1"], ledger.uow, ledger.publisher)
    assert ledger.unpublished() == ["c1"]


def test_the_relay_publishes_only_events_left_unpublished_for_a_while(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "old", account_id="alice", amount=5)
    ledger.clock.advance(limits.outbox_republish_after_s + 1)
    ledger.run("credit", "new", account_id="alice", amount=5)
    relayed = service.relay_events(
        ledger.uow, ledger.publisher, older_than_s=limits.outbox_republish_after_s
    )
    assert relayed == 1
    assert [e.message_id for e in ledger.publisher.published] == ["old"]
    assert ledger.unpublished() == ["new"]


def test_the_relay_publishes_bursts_of_at_most_its_limit_oldest_first(ledger: Service) -> None:
    ledger.open("alice")
    for n in range(5):
        ledger.run("credit", f"c{n}", account_id="alice", amount=1)
    ledger.clock.advance(1)
    relayed = service.relay_events(
        ledger.uow, ledger.publisher, older_than_s=0, limit=2, bursts_max=2
    )
    assert relayed == 4
    assert [e.message_id for e in ledger.publisher.published] == ["c0", "c1", "c2", "c3"]
    assert ledger.unpublished() == ["c4"]


def test_the_relay_stops_after_a_burst_smaller_than_its_limit(ledger: Service) -> None:
    ledger.open("alice")
    for n in range(3):
        ledger.run("credit", f"c{n}", account_id="alice", amount=1)
    ledger.clock.advance(1)
    assert service.relay_events(ledger.uow, ledger.publisher, older_than_s=0, limit=5) == 3
    assert ledger.unpublished() == []


def test_the_relay_with_nothing_to_publish_publishes_nothing(ledger: Service) -> None:
    assert service.relay_events(ledger.uow, ledger.publisher, older_than_s=0) == 0
    assert ledger.publisher.published == []


def test_a_relay_the_broker_refuses_leaves_the_events_to_the_next(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=1)
    ledger.clock.advance(1)
    ledger.publisher.down = True
    with pytest.raises(TransientError):
        service.relay_events(ledger.uow, ledger.publisher, older_than_s=0)
    ledger.publisher.down = False
    assert service.relay_events(ledger.uow, ledger.publisher, older_than_s=0) == 1


def test_a_hold_expired_event_is_published_with_the_body_it_was_recorded_with(
    ledger: Service,
) -> None:
    ledger.funded("alice", 100)
    ledger.run("hold", "h1", account_id="alice", amount=10, expires_in=1)
    ledger.clock.advance(1)
    event_id = service.expire_hold("h1", ledger.uow, ledger.clock)
    assert event_id is not None
    service.publish_events([event_id], ledger.uow, ledger.publisher)
    (event,) = ledger.publisher.published
    assert event.routing_key == "hold.expired"
    assert isinstance(event.body, dict) and event.body["remaining"] == 0


def test_accepting_many_operations_takes_one_transaction(ledger: Service) -> None:
    commits = ledger.uow.commits
    service.accept_operations([credit(f"c{n}", "alice", 1) for n in range(50)], ledger.uow)
    assert ledger.uow.commits - commits == 1
    assert len(ledger.uow.committed.operations) == 50
