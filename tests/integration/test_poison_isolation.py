"""One operation the service cannot apply ends failed alone; the sweep's resends are bounded."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from billing import limits, service
from billing.adapters.ledger_db import SqlUnitOfWork, account_lock_key
from billing.domain import Operation, OperationType
from billing.ports import InvalidData, LockBusy, TransientError
from tests.support import refusals


@pytest.fixture
def engine(workerless_engine: Any) -> Any:
    return workerless_engine


def credit(engine: Any, operation_id: str, amount: int = 10) -> None:
    operation = Operation(
        operation_id, OperationType.credit, {"account_id": "alice", "amount": amount}
    )
    service.accept_operation(operation, SqlUnitOfWork(engine))


def outcome(engine: Any, operation_id: str) -> tuple[str, str | None]:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, error_code FROM operations WHERE operation_id = :id"),
            {"id": operation_id},
        ).one()
    return row.status, row.error_code


def posted(engine: Any, account_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT posted FROM accounts WHERE account_id = :id"), {"id": account_id}
            ).scalar_one()
        )


def test_an_operation_the_database_refuses_ends_failed_and_the_others_of_its_task_apply(
    engine: Any,
) -> None:
    refusals.refuse(engine, "entries", "refused")
    for operation_id in ("before", "refused", "after"):
        credit(engine, operation_id)

    applied = service.apply_operations(["before", "refused", "after"], SqlUnitOfWork(engine))

    assert [(a.operation_id, a.newly_applied) for a in applied] == [
        ("before", True),
        ("refused", True),
        ("after", True),
    ]
    assert outcome(engine, "refused") == ("failed", "internal_error")
    assert outcome(engine, "before") == outcome(engine, "after") == ("succeeded", None)
    assert posted(engine, "alice") == 20
    refused = applied[1].record
    assert refused is not None and refused.error_code == "internal_error"
    assert refused.error_message is not None
    assert f"in {limits.operation_attempts_max} attempts" in refused.error_message


def test_an_operation_whose_failure_cannot_be_stored_either_fails_the_task_after_the_others(
    engine: Any,
) -> None:
    refusals.refuse(engine, "entries", "refused")
    refusals.refuse(engine, "operations", "refused")
    credit(engine, "refused")
    credit(engine, "other")

    # The task fails (its message is parked for the operators), once the other applied.
    with pytest.raises(InvalidData):
        service.apply_operations(["refused", "other"], SqlUnitOfWork(engine))

    assert outcome(engine, "refused") == ("pending", None)
    assert outcome(engine, "other") == ("succeeded", None)


def test_a_busy_account_lock_is_an_outage_to_retry_never_a_reason_to_give_up(
    engine: Any,
) -> None:
    credit(engine, "c1")
    with engine.connect() as holder:
        holder.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": account_lock_key("alice")}
        )
        with pytest.raises(LockBusy):
            service.apply_operations(["c1"], SqlUnitOfWork(engine))
        holder.rollback()
    assert outcome(engine, "c1") == ("pending", None)


def stuck(engine: Any, operation_id: str, resends: int) -> None:
    """Pending long enough for the sweep, as if sent `resends` times already."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE operations SET accepted_at = now() - interval '1 hour', "
                "resent_at = CASE WHEN :resends > 0 THEN now() - interval '1 hour' END, "
                "resends = :resends WHERE operation_id = :id"
            ),
            {"id": operation_id, "resends": resends},
        )


def sweep(engine: Any, sent: list[list[str]]) -> tuple[list[str], list[Any]]:
    return service.resend_stuck_operations(
        SqlUnitOfWork(engine),
        sent.append,
        older_than_s=limits.pending_resend_after_s,
        limit=limits.sweep_batch_size_max,
    )


def test_the_sweep_resends_together_the_first_time_then_each_alone_then_gives_up(
    engine: Any,
) -> None:
    for operation_id, resends in [
        ("new-1", 0),
        ("new-2", 0),
        ("again-1", 1),
        ("again-2", limits.pending_resends_max - 1),
        ("too-often", limits.pending_resends_max),
    ]:
        credit(engine, operation_id)
        stuck(engine, operation_id, resends)
    sent: list[list[str]] = []

    resent, given_up = sweep(engine, sent)

    assert sorted(map(sorted, sent)) == [["again-1"], ["again-2"], ["new-1", "new-2"]]
    assert sorted(resent) == ["again-1", "again-2", "new-1", "new-2"]
    assert [(a.operation_id, a.event_ids) for a in given_up] == [("too-often", ["too-often"])]
    assert outcome(engine, "too-often") == ("failed", "internal_error")
    assert posted(engine, "alice") == 0
    # Sent just now: the next sweep leaves them alone.
    assert sweep(engine, sent) == ([], [])


def test_a_resend_the_broker_did_not_take_is_not_counted(engine: Any) -> None:
    credit(engine, "c1")
    stuck(engine, "c1", limits.pending_resends_max - 1)

    def broker_down(operation_ids: list[str]) -> None:
        raise TransientError("broker unavailable")

    for _ in range(3):
        with pytest.raises(TransientError):
            service.resend_stuck_operations(
                SqlUnitOfWork(engine),
                broker_down,
                older_than_s=limits.pending_resend_after_s,
                limit=limits.sweep_batch_size_max,
            )
    with engine.connect() as connection:
        resends = connection.execute(
            text("SELECT resends FROM operations WHERE operation_id = 'c1'")
        ).scalar_one()
    assert resends == limits.pending_resends_max - 1
    assert outcome(engine, "c1") == ("pending", None)
