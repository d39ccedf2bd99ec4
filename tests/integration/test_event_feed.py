"""Feed numbers become visible only in their order, without gaps; pruning takes a prefix only."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from billing import feed, service
from billing.adapters import audit, batch_write, event_feed, jsoncodec, outbox_reads
from billing.adapters.ledger_db import SqlOutbox, SqlUnitOfWork
from billing.domain import Operation, OperationType
from billing.ports import Event


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: list[Event]) -> None:
        self.events.extend(events)


def credit(engine: Any, *operation_ids: str) -> None:
    """Apply a credit to alice for each id, in one ledger transaction: an event each."""
    for operation_id in operation_ids:
        operation = Operation(
            operation_id, OperationType.credit, {"account_id": "alice", "amount": 1}
        )
        service.accept_operation(operation, SqlUnitOfWork(engine))
    service.apply_operations(list(operation_ids), SqlUnitOfWork(engine))


def read_raw(engine: Any, after: int) -> list[feed.FeedEvent]:
    """What a reader gets after `after`, without the page's checks."""
    return outbox_reads.feed_page(engine, after, 100)[1]


def wait_until(condition: Any, what: str) -> None:
    """Wait for a state the test needs (never deciding the outcome by time)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def waits_on_a_lock(engine: Any, pid: int) -> bool:
    with engine.connect() as connection:
        state = connection.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one_or_none()
    return bool(state == "Lock")


def record_events(uow: SqlUnitOfWork, *message_ids: str) -> None:
    """Record events as a ledger transaction does, moving nothing else."""
    events = [Event(m, "test.recorded", {"n": m}) for m in message_ids]
    uow.ledger.write_batch({}, [], [], events, datetime.now(UTC))


def test_a_number_given_while_an_earlier_ledger_transaction_is_uncommitted_is_never_read_before_it(
    workerless_engine: Any,
) -> None:
    """Two ledger transactions: the first holds its numbers open while the second tries to commit.

    A sequence taken inside each transaction would give the first 1 and the
    second 2, and commit 2 first: a reader would read 2, move past it, and
    never see 1.
    """
    engine = workerless_engine
    first = SqlUnitOfWork(engine)
    with first:
        record_events(first, "first")
        second_pid: list[int] = []
        second_done = threading.Event()

        def record_second() -> None:
            with SqlUnitOfWork(engine) as second:
                second_pid.append(
                    second.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                )
                record_events(second, "second")
                second.commit()
            second_done.set()

        thread = threading.Thread(target=record_second)
        thread.start()
        wait_until(
            lambda: second_done.is_set() or (second_pid and waits_on_a_lock(engine, second_pid[0])),
            "the second ledger transaction to commit or wait",
        )
        seen = read_raw(engine, 0)
        after = seen[-1].event_seq if seen else 0
        first.commit()
    thread.join()
    seen += read_raw(engine, after)

    assert [(e.event_seq, e.message_id) for e in seen] == [(1, "first"), (2, "second")]


def test_a_ledger_transaction_that_rolls_back_gives_its_numbers_back(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    with SqlUnitOfWork(engine) as uow:
        record_events(uow, "a")
        # Not committed: rolled back.
    with SqlUnitOfWork(engine) as uow:
        record_events(uow, "b", "c")
        uow.commit()
    assert [(e.event_seq, e.message_id) for e in read_raw(engine, 0)] == [(1, "b"), (2, "c")]
    credit(engine, "d")
    assert [e.event_seq for e in read_raw(engine, 2)] == [3]
    assert audit.run_audit(engine) == []


def test_every_copy_of_an_event_carries_its_number_and_the_feed_holds_the_same_text(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    credit(engine, "c1", "c2")
    publisher = RecordingPublisher()
    service.publish_events(["c2"], SqlUnitOfWork(engine), publisher)
    # The relay publishes what its publisher left behind.
    service.relay_events(SqlUnitOfWork(engine), publisher, older_than_s=0)
    with engine.begin() as connection:
        # Published once more (a crash before the mark): the same text again.
        connection.execute(text("INSERT INTO outbox_pending SELECT event_id FROM outbox"))
    service.relay_events(SqlUnitOfWork(engine), publisher, older_than_s=0)

    texts = [(e.message_id, jsoncodec.text_of(e.body)) for e in publisher.events]
    assert [m for m, _ in texts[:2]] == ["c2", "c1"]
    assert sorted(texts[:2]) == sorted(texts[2:])
    in_feed = {e.message_id: e for e in read_raw(engine, 0)}
    for message_id, body in texts:
        assert in_feed[message_id].body == body
        assert jsoncodec.loads(body)["event_seq"] == in_feed[message_id].event_seq
    # Numbered in the order the ledger recorded them, not the order published.
    assert [in_feed[m].event_seq for m in ("c1", "c2")] == [1, 2]


def test_a_hold_expiry_event_carries_its_number_first_in_its_stored_body(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    credit(engine, "c1")
    hold = Operation(
        "h1", OperationType.hold, {"account_id": "alice", "amount": 1, "expires_in": 1}
    )
    service.accept_operation(hold, SqlUnitOfWork(engine))
    service.apply_operations(["h1"], SqlUnitOfWork(engine))
    with engine.begin() as connection:
        connection.execute(text("UPDATE holds SET expires_at = now() - interval '1 second'"))
    expiry = service.expire_hold("h1", SqlUnitOfWork(engine))
    assert expiry is not None
    publisher = RecordingPublisher()
    service.publish_events(["c1", "h1", expiry], SqlUnitOfWork(engine), publisher)

    bodies = {e.message_id: jsoncodec.text_of(e.body) for e in publisher.events}
    assert bodies[expiry].startswith('{"event_seq":3,"account_id":"alice",')
    assert jsoncodec.loads(bodies[expiry])["status"] == "expired"


def age_events(engine: Any, days: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox SET created_at = now() - make_interval(days => :d)"), {"d": days}
        )
        connection.execute(
            text("UPDATE operations SET completed_at = now() - make_interval(days => :d)"),
            {"d": days},
        )
        # Entries are written at their operation's completion: they age with it.
        connection.execute(
            text(
                "UPDATE entries e SET created_at = o.completed_at FROM operations o "
                "WHERE o.operation_id = e.operation_id"
            )
        )
        # And each account's newest entry time with them (0014).
        connection.execute(
            text(
                "UPDATE accounts a SET last_entry_at = (SELECT max(created_at) FROM entries e "
                "WHERE e.account_id = a.account_id) WHERE NOT a.is_external"
            )
        )


def test_pruning_takes_the_oldest_published_events_in_small_transactions_and_stops_at_a_waiting_one(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    ids = [f"c{n}" for n in range(1, 8)]
    credit(engine, *ids)
    service.publish_events(ids, SqlUnitOfWork(engine), RecordingPublisher())
    age_events(engine, 31)
    with engine.begin() as connection:
        # c5 waits to be published again: it and every event after it stay.
        connection.execute(
            text("INSERT INTO outbox_pending SELECT event_id FROM outbox WHERE message_id = 'c5'")
        )
    deleted: list[int] = []

    class CountingOutbox(SqlOutbox):
        def prune_events(self, *, retention_days: int, limit: int) -> int:
            deleted.append(super().prune_events(retention_days=retention_days, limit=limit))
            return deleted[-1]

    uow = SqlUnitOfWork(engine)
    uow.outbox = CountingOutbox(uow)
    pruned = service.prune_events(
        uow, retention_days=30, rows_per_transaction=3, transactions_max=10
    )
    assert pruned == 4 and deleted == [3, 1]
    assert [e.message_id for e in read_raw(engine, 0)] == ["c5", "c6", "c7"]
    last_seq, events = outbox_reads.feed_page(engine, 2, 100)
    with pytest.raises(feed.EventsPruned) as gone:
        feed.feed_page(2, last_seq, events)
    assert gone.value.retained_after == 4
    assert feed.feed_page(4, *outbox_reads.feed_page(engine, 4, 100)).next_after == 7
    # Pruned operations are no longer expected to have their events.
    assert audit.run_audit(engine) == []


def test_pruning_keeps_what_is_inside_the_retention(workerless_engine: Any) -> None:
    engine = workerless_engine
    credit(engine, "c1", "c2")
    service.publish_events(["c1", "c2"], SqlUnitOfWork(engine), RecordingPublisher())
    age_events(engine, 29)
    pruned = service.prune_events(
        SqlUnitOfWork(engine), retention_days=30, rows_per_transaction=10, transactions_max=10
    )
    assert pruned == 0
    assert len(read_raw(engine, 0)) == 2


def test_a_stored_body_empty_or_not_stays_json_with_its_number(workerless_engine: Any) -> None:
    engine = workerless_engine
    with engine.begin() as connection:
        for message_id, body in (("empty", "{ }"), ("full", '{"n": [1, {}]}')):
            connection.execute(
                text(
                    "WITH n AS (UPDATE event_seq_counter SET last_seq = last_seq + 1 "
                    "RETURNING last_seq), e AS (INSERT INTO outbox (message_id, routing_key, "
                    "body, event_seq) SELECT :id, 'hold.expired', :body, last_seq FROM n "
                    "RETURNING event_id) INSERT INTO outbox_pending SELECT event_id FROM e"
                ),
                {"id": message_id, "body": body},
            )
    publisher = RecordingPublisher()
    service.publish_events(["empty", "full"], SqlUnitOfWork(engine), publisher)
    bodies = {e.message_id: jsoncodec.loads(jsoncodec.text_of(e.body)) for e in publisher.events}
    assert bodies == {"empty": {"event_seq": 1}, "full": {"event_seq": 2, "n": [1, {}]}}


def test_vacuuming_the_pending_marks_gives_their_space_back(workerless_engine: Any) -> None:
    """Every event inserts a mark and deletes it: without a vacuum the dead ones stay for good."""
    engine = workerless_engine
    size = text("SELECT pg_relation_size('outbox_pending')")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO outbox_pending SELECT generate_series(1, 20000)"))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_pending"))
        bloated = connection.execute(size).scalar_one()
    event_feed.vacuum_pending_marks(engine)
    with engine.connect() as connection:
        assert connection.execute(size).scalar_one() < bloated / 10


def test_the_ledger_write_numbers_its_events_by_key_without_compiling_while_locks_are_held(
    workerless_engine: Any,
) -> None:
    """The write runs with sequential scans disabled (`ledger_db.PLAN_BY_KEY`): read
    without its key, the one-row counter cost so much that PostgreSQL compiled the
    statement (JIT), 400 ms a write with every account lock held."""
    engine = workerless_engine
    events = [Event("e1", "test.recorded", {"n": 1})]
    parameters = batch_write.write_parameters({}, [], [], events, datetime.now(UTC))
    with SqlUnitOfWork(engine) as uow:
        uow.ledger.lock_and_get_accounts(["alice"], ledger_seqs=0)
        explain = text("EXPLAIN (FORMAT JSON) " + batch_write.WRITE_BATCH.text)
        (plan,) = uow.connection.execute(explain, parameters).scalar_one()
    assert "JIT" not in plan

    def scans(node: dict[str, Any]) -> list[tuple[str, str]]:
        found = [(node["Node Type"], node.get("Relation Name", ""))]
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    assert ("Seq Scan", "event_seq_counter") not in scans(plan["Plan"])
    assert ("Index Scan", "event_seq_counter") in scans(plan["Plan"])
