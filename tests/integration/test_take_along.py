"""A ledger transaction takes along the oldest pending operations no other transaction holds."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from billing import limits, service
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import Operation, OperationType, Status
from tests.support import refusals


@pytest.fixture
def engine(workerless_engine: Any) -> Any:
    return workerless_engine


def accept(engine: Any, operation_id: str, kind: OperationType, **request: Any) -> None:
    service.accept_operation(Operation(operation_id, kind, request), SqlUnitOfWork(engine))


def credit(engine: Any, operation_id: str, amount: int) -> None:
    accept(engine, operation_id, OperationType.credit, account_id="alice", amount=amount)


def transfer(engine: Any, operation_id: str, amount: int) -> None:
    accept(
        engine,
        operation_id,
        OperationType.transfer,
        source_account_id="alice",
        destination_account_id="bob",
        amount=amount,
    )


def execute(engine: Any, statement: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement))


def status(engine: Any, operation_id: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT status FROM operations WHERE operation_id = :id"), {"id": operation_id}
            ).scalar_one()
        )


def test_a_task_applies_older_pending_operations_first_in_acceptance_order(engine: Any) -> None:
    credit(engine, "c1", 100)
    transfer(engine, "t1", 100)

    applied = service.apply_operations(["t1"], SqlUnitOfWork(engine))

    # The credit was accepted first, so it is applied first and funds the transfer.
    assert [(a.operation_id, a.newly_applied) for a in applied] == [("t1", True), ("c1", True)]
    assert applied[0].record is not None
    assert applied[0].record.operation.status is Status.succeeded
    assert applied[0].record.ledger_seq > applied[1].record.ledger_seq  # type: ignore[union-attr]
    assert [a.event_ids for a in applied] == [["t1"], ["c1"]]


def test_a_task_whose_operations_were_taken_along_does_nothing_and_publishes_nothing(
    engine: Any,
) -> None:
    credit(engine, "c1", 100)
    credit(engine, "c2", 100)
    service.apply_operations(["c2"], SqlUnitOfWork(engine))

    again = service.apply_operations(["c1"], SqlUnitOfWork(engine))

    assert [(a.operation_id, a.found, a.newly_applied, a.event_ids) for a in again] == [
        ("c1", True, False, [])
    ]


def test_operations_another_transaction_holds_are_skipped_not_waited_for(engine: Any) -> None:
    credit(engine, "c1", 100)
    credit(engine, "c2", 100)
    holder = engine.connect()
    holder.execute(text("SELECT 1 FROM operations WHERE operation_id = 'c1' FOR UPDATE"))
    try:
        applied = service.apply_operations(["c2"], SqlUnitOfWork(engine))
        assert [a.operation_id for a in applied] == ["c2"]
        assert status(engine, "c1") == "pending"
    finally:
        holder.rollback()
        holder.close()
    assert [a.operation_id for a in service.apply_operations(["c1"], SqlUnitOfWork(engine))] == [
        "c1"
    ]


def test_a_task_waits_for_its_own_operations_while_another_transaction_applies_them(
    engine: Any,
) -> None:
    credit(engine, "c1", 100)
    holder = engine.connect()
    holder.execute(text("SELECT 1 FROM operations WHERE operation_id = 'c1' FOR UPDATE"))
    results: list[Any] = []
    waiting = threading.Thread(
        target=lambda: results.append(service.apply_operations(["c1"], SqlUnitOfWork(engine)))
    )
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive(), "the task did not wait for the row lock on its own operation"
    holder.execute(
        text(
            "UPDATE operations SET status = 'failed', error_code = 'account_not_found', "
            "completed_at = now() WHERE operation_id = 'c1'"
        )
    )
    holder.commit()
    holder.close()
    waiting.join(timeout=10)
    # What the other transaction decided stands: the task applies nothing twice.
    assert [(a.operation_id, a.newly_applied) for a in results[0]] == [("c1", False)]
    assert status(engine, "c1") == "failed"


def test_a_transaction_takes_along_no_more_than_its_limit(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "operations_per_transaction_max", 3)
    for n in range(6):
        credit(engine, f"c{n}", 10)

    applied = service.apply_operations(["c5"], SqlUnitOfWork(engine))

    assert [a.operation_id for a in applied] == ["c5", "c0", "c1"]
    assert [status(engine, f"c{n}") for n in range(6)] == ["succeeded"] * 2 + ["pending"] * 3 + [
        "succeeded"
    ]


def test_a_recorded_operation_that_breaks_the_rules_ends_failed_in_the_task_that_took_it_along(
    engine: Any,
) -> None:
    # A row no request could have made.
    execute(
        engine,
        "INSERT INTO operations (operation_id, type, request) VALUES ('broken', 'transfer', '{}')",
    )
    credit(engine, "c1", 100)

    applied = service.apply_operations(["c1"], SqlUnitOfWork(engine))

    assert [(a.operation_id, a.newly_applied) for a in applied] == [("c1", True), ("broken", True)]
    assert status(engine, "broken") == "failed"
    assert status(engine, "c1") == "succeeded"


def test_an_operation_the_recovery_sweep_sent_again_is_left_to_its_own_tasks(engine: Any) -> None:
    credit(engine, "c1", 100)
    credit(engine, "c2", 100)
    execute(engine, "UPDATE operations SET resent_at = now() WHERE operation_id = 'c1'")

    applied = service.apply_operations(["c2"], SqlUnitOfWork(engine))

    assert [a.operation_id for a in applied] == ["c2"]
    assert status(engine, "c1") == "pending"


def test_only_recently_accepted_operations_are_taken_along(engine: Any) -> None:
    credit(engine, "c1", 100)
    credit(engine, "c2", 100)
    credit(engine, "c3", 100)
    execute(
        engine,
        "UPDATE operations SET accepted_at = now() - make_interval(secs => "
        f"{limits.take_along_window_s + 1}) WHERE operation_id = 'c1'",
    )

    applied = service.apply_operations(["c3"], SqlUnitOfWork(engine))

    assert [a.operation_id for a in applied] == ["c3", "c2"]
    assert status(engine, "c1") == "pending"


def test_an_operation_the_database_refuses_does_not_fail_the_task_that_took_it_along(
    engine: Any,
) -> None:
    refusals.refuse(engine, "entries", "refused")
    credit(engine, "refused", 10)
    credit(engine, "c1", 100)

    applied = service.apply_operations(["c1"], SqlUnitOfWork(engine))

    assert [(a.operation_id, a.newly_applied) for a in applied] == [("c1", True)]
    assert status(engine, "refused") == "pending"
    assert status(engine, "c1") == "succeeded"
