"""Plain credits, debits and transfers skip marshmallow, and get exactly what their schema gives."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from billing import limits
from billing.adapters.schemas import _intake_schema, _plain_operation, parse_operation

FIELDS = {
    "credit": ["operation_id", "account_id", "amount"],
    "debit": ["operation_id", "account_id", "amount"],
    "transfer": ["operation_id", "source_account_id", "destination_account_id", "amount"],
}

good_identifiers = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
# Near misses of every kind: empty, too long, a bad character, a trailing
# newline (which `$` would let through and `\Z` does not), other JSON types.
bad_identifiers = st.one_of(
    st.just(""),
    st.just("a" * 65),
    st.just("alice\n"),
    st.just("ali ce"),
    st.just("alicé"),
    st.text(max_size=70),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=2),
)
good_amounts = st.integers(min_value=limits.amount_min, max_value=limits.amount_max)
bad_amounts = st.one_of(
    st.sampled_from([0, -1, limits.amount_max + 1, True, False, 10.0, "10", None]),
    st.integers(),
    st.floats(allow_nan=False),
)


@st.composite
def operations(draw: Any) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    fields: dict[str, Any] = {}
    for name in FIELDS[kind]:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        good = draw(st.integers(0, 3)) > 0
        if name == "amount":
            fields[name] = draw(good_amounts if good else bad_amounts)
        else:
            fields[name] = draw(good_identifiers if good else bad_identifiers)
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.sampled_from(["metadata", "currency", "hold_id", "amout", "type"]))
        fields[extra] = draw(st.one_of(st.text(max_size=5), st.integers(), st.none()))
    return kind, fields


def schema_load(kind: str, fields: dict[str, Any]) -> list[tuple[str, Any]] | None:
    schema = _intake_schema(kind)
    assert schema is not None
    try:
        return list(schema.load(dict(fields)).items())
    except ValidationError:
        return None


@settings(max_examples=1000)
@given(operations())
@example(("credit", {"operation_id": "c-1", "account_id": "alice", "amount": True}))
@example(("debit", {"operation_id": "d-1", "account_id": "alice\n", "amount": 1}))
@example(
    (
        "transfer",
        {
            "operation_id": "t",
            "source_account_id": "a",
            "destination_account_id": "b",
            "amount": 10**15 + 1,
        },
    )
)
def test_what_is_taken_as_plain_is_what_the_schema_loads(operation: Any) -> None:
    kind, fields = operation
    plain = _plain_operation(kind, dict(fields))
    if plain is not None:
        # Same fields, same values of the same types, in the same order.
        loaded = schema_load(kind, fields)
        assert loaded is not None, (kind, fields)
        assert list(plain.items()) == loaded
        assert [type(v) for v in plain.values()] == [type(v) for _, v in loaded]


@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_every_well_formed_credit_debit_and_transfer_is_plain(kind: str, data: Any) -> None:
    fields = {
        name: data.draw(good_amounts if name == "amount" else good_identifiers)
        for name in FIELDS[kind]
    }
    assert _plain_operation(kind, dict(fields)) is not None
    assert parse_operation({"type": kind, **fields}) == (kind, fields)


def test_anything_else_goes_through_the_schema_and_its_errors() -> None:
    transfer = {
        "type": "transfer",
        "operation_id": "t-1",
        "source_account_id": "alice",
        "destination_account_id": "bob\n",
        "amount": 5,
    }
    refused = parse_operation(transfer)
    assert isinstance(refused, dict) and set(refused["details"]) == {"destination_account_id"}
    hold = {"operation_id": "h-1", "account_id": "alice", "amount": 5}
    assert _plain_operation("hold", dict(hold)) is None
    assert parse_operation({"type": "hold", **hold}) == ("hold", schema_load_dict("hold", hold))


def schema_load_dict(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    schema = _intake_schema(kind)
    assert schema is not None
    return dict(schema.load(dict(fields)))
