"""An outcome event is recorded without a body and published as the API shows its operation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from billing import service
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
        record = views.get_operation(engine, event.message_id)
        assert record is not None
        expected = {**service.render_operation(record), "schema_version": 1}
        assert jsoncodec.text_of(event.body) == jsoncodec.dumps(expected)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox_pending")).scalar_one() == 0
