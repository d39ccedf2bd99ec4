"""The API's rendering of an operation follows the representation's list of fields."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.domain import Operation, OperationType, Status
from billing.ports import OperationRecord
from billing.representation import OPERATION_FIELDS, render_operation

ACCEPTED = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def record(**changes: object) -> OperationRecord:
    fields: dict[str, object] = {
        "operation": Operation("op-1", OperationType.credit, {"amount": 5}, Status.pending),
        "error_code": None,
        "error_message": None,
        "balances": None,
        "accepted_at": ACCEPTED,
        "completed_at": None,
    }
    fields.update(changes)
    return OperationRecord(**fields)  # type: ignore[arg-type]


def test_a_pending_operation_shows_every_field_but_balances_in_the_lists_order() -> None:
    assert render_operation(record()) == {
        "operation_id": "op-1",
        "type": "credit",
        "status": "pending",
        "request": {"amount": 5},
        "error": None,
        "accepted_at": "2026-11-24T18:00:00.000000+00:00",
        "completed_at": None,
    }
    names = [f.name for f in OPERATION_FIELDS if f.name != "balances"]
    assert list(render_operation(record())) == names


def test_a_failed_operation_shows_its_error_and_an_applied_one_its_balances() -> None:
    failed = record(
        operation=Operation("op-1", OperationType.debit, {"amount": 5}, Status.failed),
        error_code="insufficient_funds",
        error_message="needs 5",
        completed_at=ACCEPTED,
    )
    assert render_operation(failed)["error"] == {"code": "insufficient_funds", "message": "needs 5"}
    balances = {"alice": {"posted": 5, "held": 0, "available": 5}}
    applied = render_operation(record(balances=balances, completed_at=ACCEPTED))
    assert applied["balances"] == balances
    assert applied["completed_at"] == "2026-11-24T18:00:00.000000+00:00"
    assert type(applied["type"]) is str and type(applied["status"]) is str
