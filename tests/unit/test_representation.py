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
        "metadata": {},
        "error": None,
        "accepted_at": "2026-11-24T18:00:00.000000+00:00",
        "completed_at": None,
        "reversed": 0,
        "reversals": [],
    }
    names = [f.name for f in OPERATION_FIELDS if f.name != "balances"]
    assert list(render_operation(record())) == names


def test_metadata_is_shown_apart_from_the_request() -> None:
    request = {"amount": 5, "metadata": {"order": 42}}
    shown = render_operation(
        record(operation=Operation("op-1", OperationType.credit, request, Status.pending))
    )
    assert (shown["request"], shown["metadata"]) == ({"amount": 5}, {"order": 42})
    assert request == {"amount": 5, "metadata": {"order": 42}}, "the record is left as it was"


def test_only_a_credit_debit_transfer_or_capture_shows_its_reversals() -> None:
    for operation_type in OperationType:
        operation = Operation("op-1", operation_type, {}, Status.succeeded)
        shown = render_operation(record(operation=operation))
        reversible = operation_type.value in ("credit", "debit", "transfer", "capture")
        assert ("reversed" in shown, "reversals" in shown) == (reversible, reversible)


def test_the_event_shows_the_operation_as_it_completed_before_any_reversal() -> None:
    reversed_once = record(reversed=3, reversals=["r-1"])
    assert render_operation(reversed_once)["reversals"] == ["r-1"]
    as_completed = render_operation(reversed_once, as_completed=True)
    assert (as_completed["reversed"], as_completed["reversals"]) == (0, [])


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
