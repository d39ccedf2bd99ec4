"""The request schemas loaded directly: what each accepts, refuses and defaults to."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from marshmallow import Schema, ValidationError

from billing import limits
from billing.adapters.schemas import (
    AccountCreateSchema,
    CreditSchema,
    DebitSchema,
    PageQuerySchema,
    TransferSchema,
    WaitQuerySchema,
)

CREDIT = {"operation_id": "op-1", "account_id": "alice", "amount": 100}
TRANSFER = {
    "operation_id": "op-2",
    "source_account_id": "alice",
    "destination_account_id": "bob",
    "amount": 100,
}


def refused_fields(schema: Schema, data: Any) -> set[str]:
    with pytest.raises(ValidationError) as refused:
        schema.load(data)
    messages = refused.value.messages
    assert isinstance(messages, dict)
    return set(messages)


# --- operations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        pytest.param(CreditSchema(), CREDIT, id="credit"),
        pytest.param(DebitSchema(), CREDIT, id="debit"),
        pytest.param(TransferSchema(), TRANSFER, id="transfer"),
    ],
)
def test_a_valid_operation_body_loads_unchanged(schema: Schema, body: dict[str, Any]) -> None:
    assert schema.load(body) == body


@pytest.mark.parametrize("amount", [limits.amount_min, limits.amount_max, 12345])
def test_amounts_from_one_to_ten_to_the_fifteenth_load_as_integers(amount: int) -> None:
    loaded = CreditSchema().load({**CREDIT, "amount": amount})
    assert loaded["amount"] == amount
    assert type(loaded["amount"]) is int


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(10.0, id="float_with_zero_fraction"),
        pytest.param(10.5, id="fractional_float"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param("10", id="numeric_string"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(0, id="zero"),
        pytest.param(-5, id="negative"),
        pytest.param(limits.amount_max + 1, id="one_over_the_maximum"),
        pytest.param(None, id="null"),
        pytest.param([1], id="list"),
    ],
)
@pytest.mark.parametrize(
    ("schema", "body"),
    [
        pytest.param(CreditSchema(), CREDIT, id="credit"),
        pytest.param(TransferSchema(), TRANSFER, id="transfer"),
    ],
)
def test_an_amount_that_is_not_a_json_integer_in_range_is_refused(
    schema: Schema, body: dict[str, Any], amount: Any
) -> None:
    assert refused_fields(schema, {**body, "amount": amount}) == {"amount"}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65_characters"),
        pytest.param("a b", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("ålice", id="unicode"),
        pytest.param("abc\n", id="trailing_newline"),
        pytest.param("\nabc", id="leading_newline"),
        pytest.param("@external:USD", id="at_sign"),
        pytest.param(7, id="integer"),
        pytest.param(None, id="null"),
    ],
)
@pytest.mark.parametrize("field", ["operation_id", "source_account_id", "destination_account_id"])
def test_an_id_outside_the_identifier_alphabet_or_length_is_refused(field: str, value: Any) -> None:
    assert refused_fields(TransferSchema(), {**TRANSFER, field: value}) == {field}


@pytest.mark.parametrize("value", ["a", "a" * 64, "A.z_0:9-x"])
def test_an_id_of_one_to_64_allowed_characters_loads(value: str) -> None:
    assert CreditSchema().load({**CREDIT, "operation_id": value})["operation_id"] == value


def test_every_missing_required_field_is_named() -> None:
    assert refused_fields(TransferSchema(), {}) == set(TRANSFER)


def test_an_unknown_field_is_refused_by_name() -> None:
    assert refused_fields(CreditSchema(), {**CREDIT, "amout": 1}) == {"amout"}


def test_transfer_fields_are_unknown_to_a_credit() -> None:
    body = {**CREDIT, "destination_account_id": "bob"}
    assert refused_fields(CreditSchema(), body) == {"destination_account_id"}


# --- accounts ---------------------------------------------------------------


def test_an_account_without_limit_or_metadata_gets_zero_and_an_empty_object() -> None:
    loaded = AccountCreateSchema().load({"account_id": "alice", "currency": "USD"})
    assert loaded == {
        "account_id": "alice",
        "currency": "USD",
        "overdraft_limit": 0,
        "metadata": {},
    }


def test_each_account_gets_its_own_default_metadata_object() -> None:
    first = AccountCreateSchema().load({"account_id": "a", "currency": "USD"})
    second = AccountCreateSchema().load({"account_id": "b", "currency": "USD"})
    assert first["metadata"] is not second["metadata"]


@pytest.mark.parametrize("currency", ["USD", "EUR", "RUB", "JPY", "XAU"])
def test_an_upper_case_iso_4217_code_is_a_currency(currency: str) -> None:
    body = {"account_id": "a", "currency": currency}
    assert AccountCreateSchema().load(body)["currency"] == currency


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "ABC", "", 840, None])
def test_anything_else_is_not_a_currency(currency: Any) -> None:
    body = {"account_id": "a", "currency": currency}
    assert refused_fields(AccountCreateSchema(), body) == {"currency"}


@pytest.mark.parametrize("limit", [-1, 1.5, 10.0, True, "10", None, limits.overdraft_limit_max + 1])
def test_an_overdraft_limit_must_be_a_non_negative_json_integer(limit: Any) -> None:
    body = {"account_id": "a", "currency": "USD", "overdraft_limit": limit}
    assert refused_fields(AccountCreateSchema(), body) == {"overdraft_limit"}


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` objects deep, itself included."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"rate": math.nan}, id="nan"),
        pytest.param({"rate": -math.inf}, id="minus_infinity"),
        pytest.param({"note": "a\x00b"}, id="nul_in_a_value"),
        pytest.param({"a\x00": 1}, id="nul_in_a_key"),
        pytest.param({"list": [[{"deep": "\x00"}]]}, id="nul_deep_inside_lists"),
        pytest.param({"note": "\ud800"}, id="unpaired_surrogate"),
        pytest.param(nested(limits.metadata_depth_max + 1), id="one_level_too_deep"),
        pytest.param(
            {"l": nested_lists(limits.metadata_depth_max)}, id="lists_count_as_levels_too"
        ),
        pytest.param([], id="a_list_not_an_object"),
    ],
)
def test_metadata_that_jsonb_cannot_store_is_refused(metadata: Any) -> None:
    body = {"account_id": "a", "currency": "USD", "metadata": metadata}
    assert refused_fields(AccountCreateSchema(), body) == {"metadata"}


def metadata_of_size(size_bytes: int) -> dict[str, Any]:
    """Metadata whose compact JSON is exactly this many bytes of UTF-8 (a 4-byte emoji included)."""
    metadata = {"note": "😀"}
    overhead = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    return {"note": "😀" + "x" * (size_bytes - overhead)}


def test_metadata_of_the_size_limit_as_compact_json_loads() -> None:
    metadata = metadata_of_size(limits.metadata_size_max_bytes)
    body = {"account_id": "a", "currency": "USD", "metadata": metadata}
    assert AccountCreateSchema().load(body)["metadata"] == metadata


@pytest.mark.parametrize(
    "size_bytes",
    [limits.metadata_size_max_bytes + 1, 4 * 1024 * 1024],
    ids=["one_byte_over", "4_mb"],
)
def test_metadata_over_the_size_limit_as_compact_json_is_refused(size_bytes: int) -> None:
    body = {"account_id": "a", "currency": "USD", "metadata": metadata_of_size(size_bytes)}
    assert refused_fields(AccountCreateSchema(), body) == {"metadata"}


def test_metadata_nested_to_the_limit_with_any_json_values_loads() -> None:
    metadata = {
        "deep": nested(limits.metadata_depth_max - 1),
        "values": [1, -2.5, 10**30, True, None, "😀 ✓"],
    }
    body = {"account_id": "a", "currency": "USD", "metadata": metadata}
    assert AccountCreateSchema().load(body)["metadata"] == metadata


# --- query parameters -------------------------------------------------------


def test_page_query_defaults_to_a_page_of_100_from_the_newest() -> None:
    assert PageQuerySchema().load({}) == {"limit": limits.page_size_default, "cursor": None}


@pytest.mark.parametrize("limit", ["0", "501", "-1", "x", "1.5"])
def test_page_limit_outside_1_to_500_is_refused(limit: str) -> None:
    assert refused_fields(PageQuerySchema(), {"limit": limit}) == {"limit"}


@pytest.mark.parametrize("cursor", ["", "x", "-1", "1.5", "1" * 20, "12\n"])
def test_a_cursor_that_is_not_a_small_decimal_number_is_refused(cursor: str) -> None:
    assert refused_fields(PageQuerySchema(), {"cursor": cursor}) == {"cursor"}


def test_wait_defaults_to_zero() -> None:
    assert WaitQuerySchema().load({}) == {"wait": 0}


@pytest.mark.parametrize("wait", ["-1", "31", "nan", "inf", "x"])
def test_wait_outside_0_to_30_seconds_is_refused(wait: str) -> None:
    assert refused_fields(WaitQuerySchema(), {"wait": wait}) == {"wait"}


@pytest.mark.parametrize("wait", ["0", "0.25", "30"])
def test_wait_from_0_to_30_seconds_loads(wait: str) -> None:
    assert WaitQuerySchema().load({"wait": wait}) == {"wait": float(wait)}
