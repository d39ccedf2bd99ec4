"""The API's operation schemas load through the gate, and what their fields declare agrees with it.

The gate (`billing.gate`) decides; the schemas' fields only document the
bodies (OpenAPI). Marshmallow's own loading of those fields is held to the
gate's judgement on generated bodies, so the documentation cannot drift
from the rules; `parse_operation` (batch items, intake messages) is the gate
itself.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from billing import gate, limits
from billing.adapters.schemas import (
    CaptureSchema,
    CreditSchema,
    DebitSchema,
    GatedSchema,
    HoldCreateSchema,
    ReleaseSchema,
    ReversalSchema,
    TransferSchema,
    parse_operation,
)

SCHEMAS: list[type[GatedSchema]] = [
    CreditSchema,
    DebitSchema,
    TransferSchema,
    HoldCreateSchema,
    CaptureSchema,
    ReleaseSchema,
    ReversalSchema,
]

good_identifiers = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
# Near misses of every kind: empty, too long, a bad character, a trailing
# newline (which `$` would let through and `\Z` does not), other JSON types.
bad_identifiers = st.one_of(
    st.sampled_from(["", "a" * 65, "alice\n", "ali ce", "alicé", "@external:USD"]),
    st.text(max_size=70),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=2),
)


def integers_between(low: int, high: int) -> tuple[Any, Any]:
    good = st.integers(min_value=low, max_value=high)
    bad = st.one_of(
        st.sampled_from([low - 1, high + 1, True, False, float(low), 2.9, str(low), None, [low]]),
        st.integers(),
        st.floats(allow_nan=True),
    )
    return good, bad


VALUES = {
    gate.identifier_problem: (good_identifiers, bad_identifiers),
    gate.amount_problem: integers_between(limits.amount_min, limits.amount_max),
    gate.expires_in_problem: integers_between(
        limits.hold_expires_in_min_s, limits.hold_expires_in_max_s
    ),
    gate.final_problem: (st.booleans(), st.sampled_from([0, 1, "true", None, 1.0])),
    gate.metadata_problem: (
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5))),
        st.sampled_from(
            [
                None,
                [],
                "x",
                1,
                {"a": "x" * limits.metadata_size_max_bytes},
                {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}},
                {"nan": float("nan")},
                {"nul": "\x00"},
            ]
        ),
    ),
}


@st.composite
def bodies(draw: Any) -> tuple[type[GatedSchema], Any]:
    schema = draw(st.sampled_from(SCHEMAS))
    if draw(st.integers(0, 30)) == 0:
        return schema, draw(st.one_of(st.none(), st.lists(st.integers()), st.text()))
    body: dict[str, Any] = {}
    for name, rule in gate.REQUESTS[schema.operation_type].items():
        if name in schema.given_apart and draw(st.integers(0, 9)) > 0:
            continue
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        good, bad = VALUES[rule.problem]
        body[name] = draw(good if draw(st.integers(0, 3)) > 0 else bad)
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.sampled_from(["meta", "currency", "amout", "type", "hold_id"]))
        body[extra] = draw(st.one_of(st.text(max_size=5), st.integers(), st.none()))
    return schema, body


def declared_fields_refuse(schema: type[GatedSchema], body: Any) -> set[str] | None:
    """What marshmallow, loading the schema's declared fields itself, refuses (None: nothing)."""
    try:
        Schema.load(schema(), body)
    except ValidationError as error:
        return set(error.normalized_messages())
    return None


@settings(max_examples=1000)
@given(bodies())
@example((CreditSchema, {"operation_id": "c-1", "account_id": "alice", "amount": True}))
@example((CreditSchema, {"operation_id": "c-1", "account_id": "alice", "amount": 2.9}))
@example((CreditSchema, {"operation_id": "c-1", "account_id": "alice", "amount": -50}))
@example((DebitSchema, {"operation_id": "d-1", "account_id": "alice\n", "amount": 1}))
@example((CaptureSchema, {"operation_id": "k-1", "hold_id": "h-1"}))
@example((HoldCreateSchema, {"operation_id": "h", "account_id": "a", "amount": 1, "expires_in": 0}))
def test_the_declared_fields_refuse_exactly_what_the_gate_refuses(body: Any) -> None:
    schema, fields = body
    problems = gate.check_request(schema.operation_type, fields, given_apart=schema.given_apart)
    assert declared_fields_refuse(schema, fields) == (set(problems) or None)


@settings(max_examples=500)
@given(bodies())
def test_an_operation_schema_loads_what_the_gate_passes_and_refuses_the_rest(body: Any) -> None:
    schema, fields = body
    problems = gate.check_request(schema.operation_type, fields, given_apart=schema.given_apart)
    try:
        loaded = schema().load(fields)
    except ValidationError as error:
        assert error.normalized_messages() == problems
    else:
        assert not problems
        assert loaded == fields


@given(bodies())
def test_a_batch_item_or_intake_message_is_judged_by_the_gate(body: Any) -> None:
    schema, fields = body
    if schema.given_apart or not isinstance(fields, dict) or "type" in fields:
        return
    parsed = parse_operation({"type": schema.operation_type, **fields})
    problems = gate.check_request(schema.operation_type, fields)
    if problems:
        assert isinstance(parsed, dict) and parsed["details"] == problems
    else:
        assert parsed == (schema.operation_type, fields)


def test_an_item_without_a_known_type_names_the_types() -> None:
    parsed = parse_operation({"type": "expiry", "operation_id": "x", "hold_id": "h"})
    assert isinstance(parsed, dict)
    assert parsed["details"] == {
        "type": ["Must be one of: credit, debit, transfer, hold, capture, release, reversal."]
    }
