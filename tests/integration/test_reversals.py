"""Reversals applied by the service on real PostgreSQL: the reversed sum, batches, events, races."""

from __future__ import annotations

import json
import multiprocessing
from typing import Any

import pytest
from sqlalchemy import text

from billing import service
from billing.adapters import audit, jsoncodec, views
from billing.adapters.database import make_engine
from billing.adapters.ledger_db import SqlLedger, SqlUnitOfWork
from billing.domain import Operation, OperationType, Status
from billing.ports import InvalidData
from billing.representation import render_operation


def accept(engine: Any, operation_id: str, kind: OperationType, **request: Any) -> None:
    outcome, _ = service.accept_operation(
        Operation(operation_id, kind, request), SqlUnitOfWork(engine)
    )
    assert outcome is service.Acceptance.accepted


def run(engine: Any, operation_id: str, kind: OperationType, **request: Any) -> dict[str, Any]:
    accept(engine, operation_id, kind, **request)
    service.apply_operation(operation_id, SqlUnitOfWork(engine))
    return shown(engine, operation_id)


def shown(engine: Any, operation_id: str) -> dict[str, Any]:
    record = views.get_operation(engine, operation_id)
    assert record is not None
    return render_operation(record)


def balance(engine: Any, account_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT posted FROM accounts WHERE account_id = :a"), {"a": account_id}
            ).scalar_one()
        )


def test_partial_reversals_of_a_transfer_add_up_to_its_amount_and_no_further(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=1_000)
    run(
        engine,
        "t",
        OperationType.transfer,
        source_account_id="alice",
        destination_account_id="bob",
        amount=600,
        metadata={"order": "o-1"},
    )
    first = run(engine, "r1", OperationType.reversal, reverses="t", amount=200)
    rest = run(engine, "r2", OperationType.reversal, reverses="t")
    over = run(engine, "r3", OperationType.reversal, reverses="t", amount=1)

    assert first["status"] == rest["status"] == "succeeded"
    assert rest["balances"] == {
        "alice": {"posted": 1_000, "held": 0, "available": 1_000},
        "bob": {"posted": 0, "held": 0, "available": 0},
    }
    assert over["error"]["code"] == "amount_exceeds_reversible"
    transfer = shown(engine, "t")
    assert (transfer["reversed"], transfer["reversals"]) == (600, ["r1", "r2"])
    assert transfer["metadata"] == {"order": "o-1"}
    assert "reversed" not in first and first["request"] == {"reverses": "t", "amount": 200}
    assert audit.run_audit(engine) == []


def test_a_reversal_after_its_operation_in_one_batch_is_applied_after_it(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    operations = [
        Operation("c", OperationType.credit, {"account_id": "alice", "amount": 500}),
        Operation("r", OperationType.reversal, {"reverses": "c", "amount": 200}),
        Operation("r-hold", OperationType.reversal, {"reverses": "h"}),
        Operation("h", OperationType.hold, {"account_id": "alice", "amount": 100}),
    ]
    service.accept_operations(operations, SqlUnitOfWork(engine), as_batch=True)
    service.apply_operations(["r-hold", "r"], SqlUnitOfWork(engine))

    assert shown(engine, "r")["status"] == "succeeded"
    assert shown(engine, "c")["reversed"] == 200
    # Before its hold in the batch, and a hold is never reversible anyway.
    assert shown(engine, "r-hold")["error"]["code"] == "operation_not_reversible"
    assert balance(engine, "alice") == 300
    assert audit.run_audit(engine) == []


def test_a_captures_reversal_gives_the_money_back_to_the_holds_account_as_posted(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500)
    run(
        engine,
        "h",
        OperationType.hold,
        account_id="alice",
        amount=300,
        destination_account_id="bob",
    )
    run(engine, "k", OperationType.capture, hold_id="h", amount=200)
    reversal = run(engine, "r", OperationType.reversal, reverses="k")

    assert reversal["balances"] == {
        "alice": {"posted": 500, "held": 0, "available": 500},
        "bob": {"posted": 0, "held": 0, "available": 0},
    }
    (hold,) = views.list_holds(engine, "alice", None, 10, None)[0]
    assert (hold.status.value, hold.captured) == ("captured", 200)
    assert audit.run_audit(engine) == []


def test_the_event_of_a_reversed_operation_stays_as_it_completed(workerless_engine: Any) -> None:
    """Every copy of an event is the same: one published again after a reversal too."""
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500, metadata={"k": [1]})
    run(engine, "r", OperationType.reversal, reverses="c", amount=5, metadata={"why": "refund"})

    with SqlUnitOfWork(engine) as uow:
        events = {e.message_id: e for e in uow.outbox.unpublished_events(["c", "r"])}
    credit = json.loads(jsoncodec.text_of(events["c"].body))
    assert (credit["reversed"], credit["reversals"], credit["metadata"]) == (0, [], {"k": [1]})
    assert credit["request"] == {"account_id": "alice", "amount": 500}
    envelope = {"schema_version": 1}
    expected = {**shown(engine, "c"), "reversed": 0, "reversals": [], "event_seq": 1}
    assert credit == {**expected, **envelope}
    reversal = json.loads(jsoncodec.text_of(events["r"].body))
    assert reversal == {**shown(engine, "r"), "event_seq": 2, **envelope}
    assert reversal["metadata"] == {"why": "refund"} and "reversed" not in reversal


def test_the_database_refuses_a_reversed_sum_beyond_the_operations_amount(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500)
    with SqlUnitOfWork(engine) as uow:
        uow.operations.record_reversals({"c": [("x", 400)]})
        with pytest.raises(InvalidData, match="reversed beyond its amount"):
            uow.operations.record_reversals({"c": [("y", 101)]})


def test_the_audit_finds_a_reversed_sum_that_is_not_its_reversals(workerless_engine: Any) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500)
    run(engine, "r", OperationType.reversal, reverses="c", amount=100)
    with engine.begin() as connection:
        connection.execute(text("UPDATE operations SET reversed = 99 WHERE operation_id = 'c'"))
    (violation,) = audit.run_audit(engine)
    assert violation.invariant.startswith("an operation's reversed sum")


def test_the_audit_finds_a_reversal_of_an_operation_that_is_not_reversible(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500)
    run(engine, "r", OperationType.reversal, reverses="c", amount=100)
    with engine.begin() as connection:
        connection.execute(text("UPDATE operations SET type = 'debit' WHERE operation_id = 'r'"))
        connection.execute(
            text(
                "UPDATE operations SET reversed = 0, reversals = NULL, type = 'hold' "
                "WHERE operation_id = 'c'"
            )
        )
        connection.execute(text("UPDATE operations SET type = 'reversal' WHERE operation_id = 'r'"))
    found = {v.invariant for v in audit.run_audit(engine)}
    assert (
        "a succeeded reversal reverses a succeeded credit, debit, transfer or capture before it"
        in found
    )


class MeanwhileLedger(SqlLedger):
    """Applies other operations in their own transactions just before its first locks."""

    def __init__(self, uow: SqlUnitOfWork, engine: Any, meanwhile: list[str]) -> None:
        super().__init__(uow)
        self._engine, self._meanwhile = engine, meanwhile

    def lock_and_get_accounts(self, account_ids: list[str], *, ledger_seqs: int) -> Any:
        while self._meanwhile:
            service.apply_operation(self._meanwhile.pop(0), SqlUnitOfWork(self._engine))
        return super().lock_and_get_accounts(account_ids, ledger_seqs=ledger_seqs)


class MeanwhileUnitOfWork(SqlUnitOfWork):
    def __init__(self, engine: Any, meanwhile: list[str]) -> None:
        super().__init__(engine)
        self.ledger = MeanwhileLedger(self, engine, meanwhile)


def left_to_its_own_tasks(engine: Any, operation_id: str) -> None:
    """As if the sweep had sent it again: no other transaction takes it along."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE operations SET resent_at = now() WHERE operation_id = :i"),
            {"i": operation_id},
        )


def test_a_reversal_decides_with_the_reversed_sum_as_it_is_under_the_locks(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=500)
    accept(engine, "late", OperationType.reversal, reverses="c", amount=300)
    accept(engine, "first", OperationType.reversal, reverses="c", amount=300)
    left_to_its_own_tasks(engine, "first")
    # "late" reads the credit unreversed; "first" reverses 300 of it before the locks.
    service.apply_operations(["late"], MeanwhileUnitOfWork(engine, ["first"]))

    assert shown(engine, "first")["status"] == "succeeded"
    assert shown(engine, "late")["error"]["code"] == "amount_exceeds_reversible"
    assert shown(engine, "c")["reversed"] == 300


def test_a_reversal_whose_operation_succeeds_before_the_locks_chooses_its_locks_again(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    accept(engine, "c", OperationType.credit, account_id="alice", amount=500)
    accept(engine, "r", OperationType.reversal, reverses="c", amount=200)
    left_to_its_own_tasks(engine, "c")
    # "r" reads the credit pending (no accounts to lock); it succeeds before the locks.
    service.apply_operations(["r"], MeanwhileUnitOfWork(engine, ["c"]))

    assert shown(engine, "r")["status"] == "succeeded"
    assert balance(engine, "alice") == 300
    assert audit.run_audit(engine) == []


# -- a race between processes ---------------------------------------------------------------

RACING_AMOUNTS = [300, 300, 400, 250, 200, 100, 350, 150]


def _apply_in_own_process(url: str, operation_id: str, barrier: Any) -> None:
    engine = make_engine(url, pool_size=1)
    barrier.wait(timeout=30)
    service.apply_operation(operation_id, SqlUnitOfWork(engine))
    engine.dispose()


def test_reversals_of_one_operation_racing_from_processes_never_sum_beyond_it(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    run(engine, "c", OperationType.credit, account_id="alice", amount=1_000)
    ids = [f"r{i}" for i in range(len(RACING_AMOUNTS))]
    for operation_id, amount in zip(ids, RACING_AMOUNTS, strict=True):
        accept(engine, operation_id, OperationType.reversal, reverses="c", amount=amount)

    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(ids))
    processes = [context.Process(target=_apply_in_own_process, args=(url, i, barrier)) for i in ids]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * len(ids)

    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT operation_id, status, error_code, CAST(request ->> 'amount' AS int) "
                "FROM operations WHERE type = 'reversal' ORDER BY ledger_seq"
            )
        ).all()
    remaining, succeeded = 1_000, []
    for operation_id, status, code, amount in rows:
        if amount <= remaining:
            assert status == "succeeded", (operation_id, rows)
            remaining -= amount
            succeeded.append(operation_id)
        else:
            assert (status, code) == ("failed", "amount_exceeds_reversible"), rows
    credit = shown(engine, "c")
    assert credit["reversed"] == 1_000 - remaining
    assert sorted(credit["reversals"]) == sorted(succeeded)
    assert any(code == "amount_exceeds_reversible" for _, _, code, _ in rows)
    assert balance(engine, "alice") == remaining
    assert audit.run_audit(engine) == []
    assert all(r[1] != Status.pending.value for r in rows)
