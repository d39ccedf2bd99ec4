"""Metadata on operations: judged by the gate, compared on a retry, shown apart from the request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billing import gate, limits
from billing.domain import Operation, OperationType, Status
from billing.ports import OperationRecord
from billing.representation import render_operation
from billing.service import same_operation

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CREDIT = {"operation_id": "c-1", "account_id": "alice", "amount": 5}


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep, itself the first."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "kind",
    ["credit", "debit", "transfer", "hold", "capture", "release", "reversal"],
)
def test_every_operation_type_may_carry_metadata(kind: str) -> None:
    assert "metadata" in gate.REQUESTS[kind]
    assert not gate.REQUESTS[kind]["metadata"].required


def test_metadata_up_to_the_limits_passes() -> None:
    filler = "x" * (limits.metadata_size_max_bytes - len('{"a":""}'))
    assert gate.check_request("credit", {**CREDIT, "metadata": {"a": filler}}) == {}
    assert gate.check_request("credit", {**CREDIT, "metadata": nested(8)}) == {}
    assert gate.check_request("credit", {**CREDIT, "metadata": {}}) == {}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"a": "x" * limits.metadata_size_max_bytes}, "bytes as compact JSON"),
        # Counted in UTF-8 bytes: 2,048 characters of two bytes each are too many.
        ({"a": "é" * 2_048}, "bytes as compact JSON"),
        (nested(9), "nested more than 8 deep"),
        ({"a": [[[[[[[[]]]]]]]]}, "nested more than 8 deep"),
        ([], "Not a valid mapping type."),
        ("order 42", "Not a valid mapping type."),
        (None, "Not a valid mapping type."),
        ({"a": float("nan")}, "NaN"),
        ({"a": "\x00"}, "NUL"),
        ({"a": "\ud800"}, "Unicode"),
    ],
)
def test_metadata_beyond_the_limits_or_not_an_object_is_refused(
    metadata: Any, message: str
) -> None:
    problems = gate.check_request("credit", {**CREDIT, "metadata": metadata})
    assert list(problems) == ["metadata"]
    assert message in problems["metadata"][0]


def test_a_recorded_operation_whose_metadata_breaks_the_rules_is_refused_by_the_ledger() -> None:
    operation = Operation(
        "c-1", OperationType.credit, {"account_id": "a", "amount": 1, "metadata": nested(9)}
    )
    failure = gate.refusal(operation)
    assert failure is not None and "metadata" in failure.message


def record(kind: OperationType, request: dict[str, Any], **fields: Any) -> OperationRecord:
    return OperationRecord(
        Operation("op", kind, request, Status.succeeded), None, None, {}, NOW, NOW, **fields
    )


def test_metadata_is_shown_apart_from_the_request() -> None:
    request = {"account_id": "alice", "amount": 5, "metadata": {"order": 42}}
    body = render_operation(record(OperationType.credit, request))
    assert body["request"] == {"account_id": "alice", "amount": 5}
    assert body["metadata"] == {"order": 42}
    assert request["metadata"] == {"order": 42}, "the record is left as it was"


def test_an_operation_without_metadata_shows_an_empty_object() -> None:
    body = render_operation(record(OperationType.release, {"hold_id": "h"}))
    assert body["metadata"] == {}
    assert "reversed" not in body and "reversals" not in body


def test_a_reversible_operation_shows_its_reversals() -> None:
    fresh = render_operation(record(OperationType.debit, {"account_id": "a", "amount": 5}))
    assert (fresh["reversed"], fresh["reversals"]) == (0, [])
    reversed_once = render_operation(
        record(OperationType.capture, {"hold_id": "h"}, reversed=3, reversals=["r-1"])
    )
    assert (reversed_once["reversed"], reversed_once["reversals"]) == (3, ["r-1"])


@pytest.mark.parametrize(
    ("stored", "given", "same"),
    [
        ({"metadata": {"a": 1}}, {"metadata": {"a": 1}}, True),
        ({"metadata": {"a": 1, "b": 2}}, {"metadata": {"b": 2, "a": 1}}, True),
        ({}, {"metadata": {}}, True),
        ({"metadata": {}}, {}, True),
        ({"metadata": {"a": 1}}, {"metadata": {"a": 2}}, False),
        ({"metadata": {"a": 1}}, {}, False),
        ({}, {"metadata": {"a": 1}}, False),
        # jsonb gives `true` back as true; Python's == would call it 1.
        ({"metadata": {"a": True}}, {"metadata": {"a": 1}}, False),
        ({"metadata": {"a": 1e20}}, {"metadata": {"a": 10**20}}, True),
    ],
)
def test_a_retry_is_the_same_operation_only_with_the_same_metadata(
    stored: dict[str, Any], given: dict[str, Any], same: bool
) -> None:
    request = {"account_id": "alice", "amount": 5}
    recorded = record(OperationType.credit, {**request, **stored})
    retried = Operation("op", OperationType.credit, {**request, **given})
    assert same_operation(recorded, retried) is same
