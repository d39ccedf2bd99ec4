"""An outcome event is recorded without a body and published as the API shows its operation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import text

from billing import representation, service
from billing.adapters import jsoncodec, views
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import Operation, OperationType
from billing.ports import Event


class RecordingPublisher:
    """Keeps what would go to the broker (publishing itself is tested end to end)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: list[Event]) -> None:
        self.events.extend(events)


def accept(engine: Any, operation_id: str, kind: OperationType, **request: Any) -> None:
    service.accept_operation(Operation(operation_id, kind, request), SqlUnitOfWork(engine))


def test_outcome_events_are_stored_without_a_body_and_published_as_the_api_shows_them(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    accept(engine, "c1", OperationType.credit, account_id="alice", amount=100)
    accept(engine, "d1", OperationType.debit, account_id="bob", amount=5)
    service.apply_operations(["c1", "d1"], SqlUnitOfWork(engine))
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT message_id, body FROM outbox")).all()
    assert sorted(stored) == [("c1", None), ("d1", None)]

    publisher = RecordingPublisher()
    # One by the result task, the other by the relay, as if its result task had died.
    assert service.publish_events(["c1"], SqlUnitOfWork(engine), publisher) == 1
    assert service.relay_events(SqlUnitOfWork(engine), publisher, older_than_s=0) == 1

    assert [(e.message_id, e.routing_key) for e in publisher.events] == [
        ("c1", "operation.credit.succeeded"),
        ("d1", "operation.debit.failed"),
    ]
    for event in publisher.events:
        assert published_as_the_api_shows_it(engine, event)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox_pending")).scalar_one() == 0


def published_as_the_api_shows_it(engine: Any, event: Event) -> bool:
    """The event's body is its operation as the API renders it, with its feed number, top-level
    keys sorted."""
    record = views.get_operation(engine, event.message_id)
    assert record is not None
    with engine.connect() as connection:
        event_seq = connection.execute(
            text("SELECT event_seq FROM outbox WHERE message_id = :id"), {"id": event.message_id}
        ).scalar_one()
    assert isinstance(event_seq, int)
    body = json.loads(jsoncodec.text_of(event.body))
    assert list(body) == sorted(body)
    expected = {
        **representation.render_operation(record),
        "event_seq": event_seq,
        "schema_version": 1,
    }
    return bool(body == expected)


def test_an_outcome_body_is_rendered_with_what_json_escapes_and_big_numbers_intact(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    awkward = 'a "quoted" \\ back\\slash, a tab\t, a new\nline, \u00e9t\u00e9 and \U0001f4b8'
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, status, error_code, "
                "error_message, balances, accepted_at, completed_at, ledger_seq) VALUES "
                "('x1', 'transfer', CAST(:request AS jsonb), 'failed', 'insufficient_funds', "
                ":message, NULL, '2026-01-02 03:04:05.000007+00', "
                "'2026-01-02 03:04:05.5+02', 7)"
            ),
            {
                "request": json.dumps({"memo": awkward, "amount": 2**62, "nested": {"b": [1]}}),
                "message": awkward,
            },
        )
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, status, balances, "
                "completed_at, ledger_seq) VALUES ('x2', 'credit', '{}', 'succeeded', "
                "CAST(:balances AS jsonb), now(), 8)"
            ),
            {"balances": json.dumps({"alice": {"posted": 2**63 - 1, "held": 0}})},
        )
        for message_id, key in (
            ("x1", "operation.transfer.failed"),
            ("x2", "operation.credit.succeeded"),
        ):
            connection.execute(
                text(
                    "WITH n AS (UPDATE event_seq_counter SET last_seq = last_seq + 1 "
                    "RETURNING last_seq), e AS (INSERT INTO outbox (message_id, routing_key, "
                    "event_seq) SELECT :id, :key, last_seq FROM n RETURNING event_id) "
                    "INSERT INTO outbox_pending SELECT event_id FROM e"
                ),
                {"id": message_id, "key": key},
            )

    with SqlUnitOfWork(engine) as uow:
        events = uow.outbox.unpublished_events(["x1", "x2"])
    assert [e.message_id for e in events] == ["x1", "x2"]
    for event in events:
        assert published_as_the_api_shows_it(engine, event)
    failed = json.loads(jsoncodec.text_of(events[0].body))
    assert failed["error"] == {"code": "insufficient_funds", "message": awkward}
    assert failed["request"]["memo"] == awkward and failed["request"]["amount"] == 2**62
    assert failed["accepted_at"] == "2026-01-02T03:04:05.000007+00:00"
    assert failed["completed_at"] == "2026-01-02T01:04:05.500000+00:00"
    assert "balances" not in failed


def outbox_rows_read(plan: dict[str, Any], relation: str = "outbox") -> int:
    """Rows an EXPLAIN ANALYZE plan read from `relation`, kept or filtered out, over every
    loop."""
    read = 0
    if plan.get("Relation Name") == relation:
        kept_or_removed = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        read += kept_or_removed * plan["Actual Loops"]
    return read + sum(outbox_rows_read(child, relation) for child in plan.get("Plans", []))


# The next `count` feed numbers, as a ledger transaction takes them: `c.base` + 1 on.
NUMBERS = (
    "WITH c AS (UPDATE event_seq_counter SET last_seq = last_seq + :count "
    "RETURNING last_seq - :count AS base) "
)


def fill_outbox(engine: Any, published: int, late: int, recent: int) -> None:
    """Events published long ago, some left unpublished long ago, some just written and pending.

    No statistics are gathered, as on a busy database autovacuum has not
    analyzed yet: the plans PostgreSQL then chose read the whole outbox.
    """
    with engine.begin() as connection:
        for prefix, count, age in (("done", published, "1 hour"), ("late", late, "1 hour")):
            connection.execute(
                text(
                    NUMBERS + "INSERT INTO outbox (message_id, routing_key, body, created_at, "
                    "event_seq) SELECT :prefix || '-' || n, 'hold.expired', "
                    "json_build_object('n', n), now() - CAST(:age AS interval), c.base + n "
                    "FROM c, generate_series(1, :count) AS n"
                ),
                {"prefix": prefix, "count": count, "age": age},
            )
        connection.execute(
            text(
                NUMBERS + "INSERT INTO outbox (message_id, routing_key, body, event_seq) "
                "SELECT 'recent-' || n, 'hold.expired', '{}', c.base + n "
                "FROM c, generate_series(1, :count) AS n"
            ),
            {"count": recent},
        )
        connection.execute(
            text(
                "INSERT INTO outbox_pending (event_id) SELECT event_id FROM outbox "
                "WHERE message_id NOT LIKE 'done-%'"
            )
        )


@contextmanager
def statements_kept(engine: Any, *markers: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements the engine runs that contain every marker, with their parameters."""
    kept: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if all(marker in statement for marker in markers):
            kept.append((statement, parameters))

    sqlalchemy_event.listen(engine, "before_cursor_execute", keep)
    try:
        yield kept
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", keep)


def outbox_rows_read_again(
    engine: Any, statement: str, parameters: Any, relation: str = "outbox"
) -> int:
    """Run the statement again under EXPLAIN ANALYZE, rolled back: the rows of `relation`
    (the outbox unless told) it read."""
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        (plan,) = cursor.fetchone()[0]
        connection.rollback()
    return outbox_rows_read(plan["Plan"], relation)


def pending_marks(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM outbox_pending")).scalar_one())


def bodies(events: list[Event]) -> list[Any]:
    return [jsoncodec.loads(jsoncodec.text_of(e.body)) for e in events]


def test_the_relay_reads_the_pending_events_only_however_many_were_published(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    late, recent = 3, 5_000
    fill_outbox(engine, published=20_000, late=late, recent=recent)

    publisher = RecordingPublisher()
    with statements_kept(engine, "FROM outbox_pending p", "SKIP LOCKED") as claims:
        assert service.relay_events(SqlUnitOfWork(engine), publisher, older_than_s=60) == late
    assert [e.message_id for e in publisher.events] == ["late-1", "late-2", "late-3"]
    # Numbered after the 20,000 published ones: a stored body gets its number first.
    assert bodies(publisher.events) == [{"event_seq": 20_000 + n, "n": n} for n in (1, 2, 3)]
    assert pending_marks(engine) == recent

    # The same claim again, on the recent events still pending: it may read
    # each of them and its row, never the published ones.
    (statement, parameters), *_ = claims
    assert outbox_rows_read_again(engine, statement, parameters) <= recent


def test_the_result_task_reads_only_the_events_it_is_given_however_many_were_published(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    fill_outbox(engine, published=20_000, late=0, recent=500)
    given = [f"recent-{n}" for n in range(1, 501)] + ["recent-7", "done-1", "never-recorded"]

    publisher = RecordingPublisher()
    with statements_kept(engine, "FROM unnest", "outbox_pending") as reads:
        assert service.publish_events(given, SqlUnitOfWork(engine), publisher) == 500
    # Only the pending ones, each once even if given twice; a published or
    # unknown id is skipped.
    assert sorted(e.message_id for e in publisher.events) == sorted(given[:500])
    assert pending_marks(engine) == 0

    (statement, parameters), *_ = reads
    assert outbox_rows_read_again(engine, statement, parameters) <= len(given)


def test_publishing_reads_one_pending_mark_per_event_with_statistics_of_no_pending_marks(
    workerless_engine: Any,
) -> None:
    """Statistics taken while nothing was pending, after marks came and went (the
    benchmark's vacuum between runs, or autovacuum on a quiet ledger): PostgreSQL counted
    on an empty table and read every pending mark for each event."""
    engine = workerless_engine
    fill_outbox(engine, published=20_000, late=0, recent=3_000)
    marks = "INSERT INTO outbox_pending SELECT event_id FROM outbox WHERE message_id LIKE 'r%'"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("DELETE FROM outbox_pending"))
        # Its pages stay (a vacuum beside the running service seldom gets the lock to
        # give them back): no row in pages that are there.
        connection.execute(text("VACUUM (ANALYZE, TRUNCATE false) outbox, outbox_pending"))
        connection.execute(text(marks))
    given = [f"recent-{n}" for n in range(1, 501)]

    with statements_kept(engine, "FROM unnest", "outbox_pending") as reads:
        assert service.publish_events(given, SqlUnitOfWork(engine), RecordingPublisher()) == 500

    (statement, parameters), *_ = reads
    assert outbox_rows_read_again(engine, statement, parameters, "outbox_pending") <= len(given)


def test_marking_events_published_does_not_wait_for_the_disk_and_the_ledger_still_does(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    accept(engine, "c1", OperationType.credit, account_id="alice", amount=100)
    service.apply_operations(["c1"], SqlUnitOfWork(engine))
    uow = SqlUnitOfWork(engine)
    with uow:
        events = uow.outbox.unpublished_events(["c1"])
        uow.outbox.mark_events_published(events)
        # A lost mark only publishes its events again: the commit need not wait.
        setting = text("SELECT current_setting('synchronous_commit')")
        assert uow.connection.execute(setting).scalar_one() == "off"
        uow.commit()
        # Only for that transaction: the next one on the same connection waits again.
        assert uow.connection.execute(setting).scalar_one() == "on"
        uow.commit()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox_pending")).scalar_one() == 0
