"""The ledger's time never goes back along an account's entries, whatever the clock of the
machine applying a transaction (migration 0014, `batch.ledger_time`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from billing import service
from billing.adapters import reads, views
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import Operation, OperationType

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def apply_at(engine: Any, operation: Operation, moment: datetime) -> None:
    """Accept the operation, then apply it on a machine whose clock reads `moment`."""
    service.accept_operations([operation], SqlUnitOfWork(engine), as_batch=False)
    [applied] = service.apply_operations(
        [operation.operation_id], SqlUnitOfWork(engine), clock=lambda: moment
    )
    assert applied.newly_applied, applied


def test_a_worker_whose_clock_is_behind_writes_at_the_accounts_newest_time(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    credit = Operation("c1", OperationType.credit, {"account_id": "alice", "amount": 100})
    apply_at(engine, credit, NOON)
    # The next transaction on alice runs on a machine an hour behind; bob has no entry yet.
    transfer = Operation(
        "t1",
        OperationType.transfer,
        {"source_account_id": "alice", "destination_account_id": "bob", "amount": 30},
    )
    apply_at(engine, transfer, NOON - timedelta(hours=1))
    # A later one on bob alone, on a machine whose clock is right.
    debit = Operation("d1", OperationType.debit, {"account_id": "bob", "amount": 5})
    apply_at(engine, debit, NOON + timedelta(seconds=1))

    with engine.connect() as connection:
        completed = dict(
            connection.execute(text("SELECT operation_id, completed_at FROM operations")).all()
        )
        entered = connection.execute(
            text("SELECT operation_id, account_id, created_at FROM entries ORDER BY entry_id")
        ).all()
        last = dict(
            connection.execute(
                text("SELECT account_id, last_entry_at FROM accounts WHERE NOT is_external")
            ).all()
        )
    assert completed == {"c1": NOON, "t1": NOON, "d1": NOON + timedelta(seconds=1)}
    assert all(row.created_at == completed[row.operation_id] for row in entered)
    assert last == {"alice": NOON, "bob": NOON + timedelta(seconds=1)}

    # Alice's balance at noon is after both her entries, and her list shows them newest first.
    at_noon = reads.balances_at(engine, "alice", NOON)
    assert at_noon is not None and at_noon["posted"] == 70, at_noon
    items, _ = views.list_entries(engine, "alice", 10, None)
    assert [(i["operation_id"], i["posted_after"]) for i in items] == [("t1", 70), ("c1", 100)]


def test_an_account_that_has_no_entries_takes_the_clock(workerless_engine: Any) -> None:
    engine = workerless_engine
    credit = Operation("c1", OperationType.credit, {"account_id": "alice", "amount": 100})
    apply_at(engine, credit, NOON - timedelta(days=3))
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT completed_at FROM operations WHERE operation_id = 'c1'")
        ).scalar_one() == NOON - timedelta(days=3)
