"""The gate before the ledger: every operation type's fields and values, judged in one place."""

from __future__ import annotations

from typing import Any

import pytest

from billing import gate, limits
from billing.domain import ErrorCode, Operation, OperationType

GOOD: dict[str, dict[str, Any]] = {
    "credit": {"operation_id": "c-1", "account_id": "alice", "amount": 100},
    "debit": {"operation_id": "d-1", "account_id": "alice", "amount": 100},
    "transfer": {
        "operation_id": "t-1",
        "source_account_id": "alice",
        "destination_account_id": "bob",
        "amount": 100,
    },
    "hold": {
        "operation_id": "h-1",
        "account_id": "alice",
        "amount": 100,
        "destination_account_id": "bob",
        "expires_in": 60,
    },
    "capture": {"operation_id": "k-1", "hold_id": "h-1", "amount": 5, "final": False},
    "release": {"operation_id": "r-1", "hold_id": "h-1"},
}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_a_request_that_keeps_the_rules_has_no_problems(kind: str) -> None:
    assert gate.check_request(kind, GOOD[kind]) == {}


@pytest.mark.parametrize(
    ("kind", "optional"),
    [("hold", "destination_account_id"), ("hold", "expires_in"), ("capture", "amount")],
)
def test_an_optional_field_may_be_left_out(kind: str, optional: str) -> None:
    request = {k: v for k, v in GOOD[kind].items() if k != optional}
    assert gate.check_request(kind, request) == {}


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(-50, id="negative"),
        pytest.param(0, id="zero"),
        pytest.param(5 * 10**18, id="beyond_amount_max"),
        pytest.param(limits.amount_max + 1, id="one_over_amount_max"),
        pytest.param(2.9, id="float"),
        pytest.param(10.0, id="float_with_zero_fraction"),
        pytest.param(True, id="true"),
        pytest.param("10", id="string"),
        pytest.param(None, id="null"),
    ],
)
@pytest.mark.parametrize("kind", ["credit", "debit", "transfer", "hold", "capture"])
def test_an_amount_that_is_not_an_integer_in_range_is_refused(kind: str, amount: Any) -> None:
    assert set(gate.check_request(kind, {**GOOD[kind], "amount": amount})) == {"amount"}


@pytest.mark.parametrize("amount", [limits.amount_min, limits.amount_max])
def test_the_amount_limits_themselves_are_allowed(amount: int) -> None:
    assert gate.check_request("credit", {**GOOD["credit"], "amount": amount}) == {}


@pytest.mark.parametrize(
    "value", ["", "a" * (limits.identifier_length_max + 1), "a b", "abc\n", "@external:USD", 7]
)
@pytest.mark.parametrize("field", ["operation_id", "source_account_id", "destination_account_id"])
def test_an_identifier_outside_the_pattern_or_length_is_refused(field: str, value: Any) -> None:
    assert set(gate.check_request("transfer", {**GOOD["transfer"], field: value})) == {field}


@pytest.mark.parametrize("expires_in", [0, limits.hold_expires_in_max_s + 1, 1.5, True, "60", None])
def test_expires_in_must_be_whole_seconds_in_range(expires_in: Any) -> None:
    refused = gate.check_request("hold", {**GOOD["hold"], "expires_in": expires_in})
    assert set(refused) == {"expires_in"}


@pytest.mark.parametrize("final", [0, 1, "true", None])
def test_final_must_be_a_boolean(final: Any) -> None:
    assert set(gate.check_request("capture", {**GOOD["capture"], "final": final})) == {"final"}


def test_a_field_another_type_allows_is_unknown_here() -> None:
    refused = gate.check_request("credit", {**GOOD["credit"], "destination_account_id": "bob"})
    assert refused == {"destination_account_id": [gate.UNKNOWN_MESSAGE]}


def test_every_missing_required_field_is_named() -> None:
    assert set(gate.check_request("transfer", {})) == set(GOOD["transfer"])


@pytest.mark.parametrize("kind", ["expiry", "refund", "", None, 3, ["credit"]])
def test_a_type_no_client_may_submit_is_refused(kind: Any) -> None:
    assert set(gate.check_request(kind, GOOD["credit"])) == {"type"}


@pytest.mark.parametrize("fields", [None, [], "credit", 5])
def test_a_request_that_is_not_an_object_is_refused(fields: Any) -> None:
    assert gate.check_request("credit", fields) == {"_schema": [gate.NOT_AN_OBJECT_MESSAGE]}


def test_a_field_given_apart_must_not_be_in_the_body_and_is_not_missing() -> None:
    body = {"operation_id": "k-1", "amount": 5}
    assert gate.check_request("capture", body, given_apart=("hold_id",)) == {}
    refused = gate.check_request("capture", {**body, "hold_id": "h-1"}, given_apart=("hold_id",))
    assert set(refused) == {"hold_id"}


def recorded(kind: OperationType, id_: str, **request: Any) -> Operation:
    return Operation(id_, kind, request)


def test_a_recorded_operation_that_keeps_the_rules_is_not_refused() -> None:
    operation = recorded(OperationType.credit, "c-1", account_id="alice", amount=5)
    assert gate.refusal(operation) is None


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(
            recorded(OperationType.credit, "c-1", account_id="alice", amount=-50), id="negative"
        ),
        pytest.param(
            recorded(OperationType.credit, "c-1", account_id="alice", amount=2.9), id="float"
        ),
        pytest.param(recorded(OperationType.transfer, "t-1"), id="no_fields"),
        pytest.param(
            recorded(OperationType.credit, "bad id", account_id="alice", amount=5),
            id="bad_operation_id",
        ),
        pytest.param(
            recorded(OperationType.credit, "c-1", operation_id="c-2", account_id="a", amount=5),
            id="operation_id_inside_the_request",
        ),
        pytest.param(recorded(OperationType.expiry, "@expiry:h-1", hold_id="h-1"), id="expiry"),
    ],
)
def test_a_recorded_operation_that_breaks_the_rules_is_refused_with_internal_error(
    operation: Operation,
) -> None:
    refused = gate.refusal(operation)
    assert refused is not None and refused.code is ErrorCode.internal_error
    assert refused.message.startswith("the recorded request breaks the rules")


def test_the_message_of_a_refusal_is_cut_at_its_limit() -> None:
    operation = recorded(OperationType.credit, "c-1", **{"x" * 10_000: 1})
    refused = gate.refusal(operation)
    assert refused is not None
    assert len(refused.message) == limits.error_message_chars_max
