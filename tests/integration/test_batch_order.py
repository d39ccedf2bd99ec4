"""A batch's operations are applied in its order, whichever transaction reaches them first."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from billing import limits, service
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import NewAccount, Operation, OperationType
from billing.ports import TransientError
from tests.support import refusals
from tests.support.stack import wait_until

ACCOUNTS = ("alice", "bob", "carol")


@pytest.fixture
def engine(workerless_engine: Any) -> Any:
    service.open_account(NewAccount("carol", "USD"), SqlUnitOfWork(workerless_engine))
    return workerless_engine


def chain(name: str, length: int) -> list[Operation]:
    """A credit of 1 to alice, then transfers passing that 1 around alice, bob and carol:
    each transfer spends what the one before it brought."""
    operations = [Operation(f"{name}0", OperationType.credit, {"account_id": "alice", "amount": 1})]
    for k in range(1, length):
        request = {
            "source_account_id": ACCOUNTS[(k - 1) % 3],
            "destination_account_id": ACCOUNTS[k % 3],
            "amount": 1,
        }
        operations.append(Operation(f"{name}{k}", OperationType.transfer, request))
    return operations


def accept_batch(engine: Any, operations: list[Operation]) -> list[str]:
    service.accept_operations(operations, SqlUnitOfWork(engine), as_batch=True)
    return [o.operation_id for o in operations]


def outcomes(engine: Any, operation_ids: list[str]) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = dict(
            (operation_id, (status, code))
            for operation_id, status, code in connection.execute(
                text(
                    "SELECT operation_id, status, error_code FROM operations "
                    "WHERE operation_id = ANY(:ids)"
                ),
                {"ids": operation_ids},
            )
        )
    return [rows[i] for i in operation_ids]


def ledger_order(engine: Any, operation_ids: list[str]) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT operation_id FROM operations WHERE operation_id = ANY(:ids) "
                    "AND ledger_seq IS NOT NULL ORDER BY ledger_seq"
                ),
                {"ids": operation_ids},
            ).scalars()
        )


def hold_rows(engine: Any, operation_ids: list[str]) -> Any:
    """Another transaction that holds these operations' rows, as one applying them does."""
    holder = engine.connect()
    holder.execute(
        text("SELECT 1 FROM operations WHERE operation_id = ANY(:ids) FOR UPDATE"),
        {"ids": operation_ids},
    )
    return holder


def someone_waits_for_a_row_lock(engine: Any) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_the_last_operation_of_a_batch_applies_the_ones_before_it_first(engine: Any) -> None:
    ids = accept_batch(engine, chain("a", 6))

    applied = service.apply_operations([ids[-1]], SqlUnitOfWork(engine))

    assert [a.operation_id for a in applied] == [ids[-1], *ids[:-1]]
    assert all(a.newly_applied for a in applied)
    assert outcomes(engine, ids) == [("succeeded", None)] * 6
    assert ledger_order(engine, ids) == ids


def test_a_batch_given_one_operation_at_a_time_in_reverse_is_applied_in_its_order(
    engine: Any,
) -> None:
    ids = accept_batch(engine, chain("r", 8))
    # As the recovery sweep leaves them: never taken along, each in a task of its own.
    with engine.begin() as connection:
        connection.execute(text("UPDATE operations SET resent_at = now()"))

    for operation_id in reversed(ids):
        service.apply_operations([operation_id], SqlUnitOfWork(engine))

    assert outcomes(engine, ids) == [("succeeded", None)] * 8
    assert ledger_order(engine, ids) == ids


def test_a_batch_longer_than_a_transaction_is_applied_in_order_over_several(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "operations_per_transaction_max", 3)
    ids = accept_batch(engine, chain("l", 10))

    applied = service.apply_operations(ids[5:], SqlUnitOfWork(engine))

    assert [a.operation_id for a in applied] == ids[5:] + ids[:5]
    assert outcomes(engine, ids) == [("succeeded", None)] * 10
    assert ledger_order(engine, ids) == ids


def test_a_task_stops_after_its_transactions_limit_with_what_it_applied_kept_in_order(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "operations_per_transaction_max", 1)
    ids = accept_batch(engine, chain("x", limits.ledger_transactions_per_task_max + 2))

    with pytest.raises(TransientError):
        service.apply_operations([ids[-1]], SqlUnitOfWork(engine))

    done = limits.ledger_transactions_per_task_max
    assert outcomes(engine, ids) == [("succeeded", None)] * done + [("pending", None)] * 2
    assert ledger_order(engine, ids) == ids[:done]
    service.apply_operations([ids[-1]], SqlUnitOfWork(engine))
    assert outcomes(engine, ids) == [("succeeded", None)] * len(ids)


def test_the_take_along_leaves_a_later_operation_whose_earlier_one_another_transaction_holds(
    engine: Any,
) -> None:
    credit, first, second = accept_batch(engine, chain("h", 3))
    accept_batch(
        engine, [Operation("other", OperationType.credit, {"account_id": "bob", "amount": 5})]
    )
    holder = hold_rows(engine, [credit])
    try:
        applied = service.apply_operations(["other"], SqlUnitOfWork(engine))
    finally:
        holder.rollback()
        holder.close()

    assert [a.operation_id for a in applied] == ["other"]
    assert outcomes(engine, [credit, first, second]) == [("pending", None)] * 3
    service.apply_operations([credit], SqlUnitOfWork(engine))
    assert outcomes(engine, [credit, first, second]) == [("succeeded", None)] * 3
    assert ledger_order(engine, [credit, first, second]) == [credit, first, second]


def test_the_take_along_stops_a_batch_at_an_earlier_operation_another_transaction_holds(
    engine: Any,
) -> None:
    ids = accept_batch(engine, chain("m", 5))
    holder = hold_rows(engine, [ids[2]])
    try:
        applied = service.apply_operations([ids[0]], SqlUnitOfWork(engine))
    finally:
        holder.rollback()
        holder.close()

    assert [a.operation_id for a in applied] == ids[:2]
    assert outcomes(engine, ids) == [("succeeded", None)] * 2 + [("pending", None)] * 3


def test_a_later_operation_waits_for_an_earlier_one_another_transaction_holds(
    engine: Any,
) -> None:
    credit, transfer = accept_batch(engine, chain("w", 2))
    holder = hold_rows(engine, [credit])
    results: list[Any] = []
    waiting = threading.Thread(
        target=lambda: results.append(service.apply_operations([transfer], SqlUnitOfWork(engine)))
    )
    waiting.start()
    try:
        wait_until(lambda: someone_waits_for_a_row_lock(engine), 10, "the transfer's task to wait")
        assert outcomes(engine, [credit, transfer]) == [("pending", None)] * 2
    finally:
        holder.rollback()
        holder.close()
    waiting.join(timeout=10)

    assert [a.operation_id for a in results[0]] == [transfer, credit]
    assert outcomes(engine, [credit, transfer]) == [("succeeded", None)] * 2
    assert ledger_order(engine, [credit, transfer]) == [credit, transfer]


def test_an_earlier_operation_completed_while_waited_for_is_not_applied_again(
    engine: Any,
) -> None:
    credit, transfer = accept_batch(engine, chain("d", 2))
    holder = hold_rows(engine, [credit])
    results: list[Any] = []
    waiting = threading.Thread(
        target=lambda: results.append(service.apply_operations([transfer], SqlUnitOfWork(engine)))
    )
    waiting.start()
    try:
        wait_until(lambda: someone_waits_for_a_row_lock(engine), 10, "the transfer's task to wait")
        # The holder applies the credit, as another ledger transaction would.
        holder.execute(text("UPDATE accounts SET posted = 1 WHERE account_id = 'alice'"))
        holder.execute(
            text(
                "UPDATE operations SET status = 'succeeded', completed_at = now() "
                "WHERE operation_id = :id"
            ),
            {"id": credit},
        )
        holder.commit()
    finally:
        holder.close()
    waiting.join(timeout=10)

    assert [(a.operation_id, a.newly_applied) for a in results[0]] == [(transfer, True)]
    assert outcomes(engine, [credit, transfer]) == [("succeeded", None)] * 2
    with engine.connect() as connection:
        posted = connection.execute(
            text("SELECT account_id, posted FROM accounts WHERE NOT is_external ORDER BY 1")
        ).all()
    assert posted == [("alice", 0), ("bob", 1), ("carol", 0)]


def test_a_later_operation_stays_pending_behind_an_earlier_one_that_breaks_every_transaction(
    engine: Any,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, batch_id, batch_position) "
                "VALUES ('broken', 'credit', '{\"account_id\": \"alice\", \"amount\": 3}', -1, 1), "
                "('after', 'credit', '{\"account_id\": \"alice\", \"amount\": 5}', -1, 2)"
            )
        )
    # The database refuses the first one's entries, as a defect would.
    refusals.refuse(engine, "entries", "broken")
    try:
        applied = service.apply_operations(["after"], SqlUnitOfWork(engine))
        assert [(a.operation_id, a.found, a.newly_applied) for a in applied] == [
            ("after", True, False)
        ]
        assert outcomes(engine, ["broken", "after"]) == [("pending", None)] * 2

        # Its own task gives the broken one up; then the one after it goes ahead.
        service.apply_operations(["broken"], SqlUnitOfWork(engine))
        assert outcomes(engine, ["broken"]) == [("failed", "internal_error")]
    finally:
        refusals.allow(engine, "entries", "broken")
    service.apply_operations(["after"], SqlUnitOfWork(engine))
    assert outcomes(engine, ["after"]) == [("succeeded", None)]


def test_operations_grouped_from_single_requests_do_not_wait_for_each_other(engine: Any) -> None:
    first = Operation("s1", OperationType.credit, {"account_id": "alice", "amount": 1})
    second = Operation("s2", OperationType.credit, {"account_id": "bob", "amount": 1})
    service.accept_operations([first, second], SqlUnitOfWork(engine))
    holder = hold_rows(engine, ["s1"])
    try:
        applied = service.apply_operations(["s2"], SqlUnitOfWork(engine))
    finally:
        holder.rollback()
        holder.close()

    assert [(a.operation_id, a.newly_applied) for a in applied] == [("s2", True)]


def test_an_earlier_operation_the_gate_refuses_ends_failed_and_the_later_one_goes_ahead(
    engine: Any,
) -> None:
    with engine.begin() as connection:
        # A row no request could have made, first in a batch of its own.
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, batch_id, batch_position) "
                "VALUES ('tampered', 'transfer', '{}', -2, 1), "
                "('behind', 'credit', '{\"account_id\": \"alice\", \"amount\": 5}', -2, 2)"
            )
        )

    service.apply_operations(["behind"], SqlUnitOfWork(engine))

    assert outcomes(engine, ["tampered", "behind"]) == [
        ("failed", "internal_error"),
        ("succeeded", None),
    ]
