"""Every malformed request over HTTP is refused with the contract's error body and records nothing.

Bad input is tested as carefully as good input: each case is its own named
test, answered 422 `validation_error` naming the offending field (or 401
`unauthorized`), and afterwards the operation or account does not exist.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from sqlalchemy import text

from api import bodies
from billing import limits
from tests.support.contract import assert_error
from tests.support.stack import Client

OPERATION_KINDS = ["credits", "debits", "transfers"]
IDENTIFIER = re.compile(limits.identifier_pattern)
JSON_HEADERS = {"Content-Type": "application/json"}


def operation_body(kind: str, new_id: Any) -> dict[str, Any]:
    if kind == "transfers":
        return {
            "operation_id": new_id("op"),
            "source_account_id": new_id("source"),
            "destination_account_id": new_id("destination"),
            "amount": 100,
        }
    return {"operation_id": new_id("op"), "account_id": new_id("account"), "amount": 100}


def account_body(new_id: Any) -> dict[str, Any]:
    return {"account_id": new_id("account"), "currency": "USD"}


def raw(client: Client, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request whose body and headers the test controls (the session's token unless replaced)."""
    return client.session.request(method, client.base_url + path, timeout=30, **kwargs)


def table_counts(engine: Any) -> tuple[int, int]:
    """Credits, debits, transfers and accounts recorded (periodic jobs record none of these)."""
    with engine.connect() as connection:
        operations = connection.execute(
            text("SELECT count(*) FROM operations WHERE type IN ('credit', 'debit', 'transfer')")
        ).scalar_one()
        accounts = connection.execute(text("SELECT count(*) FROM accounts")).scalar_one()
    return operations, accounts


def strings_in(body: Any) -> list[str]:
    """The body's string values a database row could hold (PostgreSQL text has no NUL)."""
    if isinstance(body, dict):
        return [v for v in body.values() if isinstance(v, str) and "\x00" not in v]
    return []


def assert_operation_not_recorded(client: Client, engine: Any, body: Any) -> None:
    """Neither the operation id nor any account the body names appears in an operation."""
    operation_id = body.get("operation_id") if isinstance(body, dict) else None
    if isinstance(operation_id, str) and IDENTIFIER.match(operation_id):
        assert client.get(f"/v1/operations/{operation_id}").status_code == 404
    names = strings_in(body)
    with engine.connect() as connection:
        recorded = connection.execute(
            text(
                "SELECT count(*) FROM operations WHERE operation_id = ANY(:names) "
                "OR request->>'account_id' = ANY(:names) "
                "OR request->>'source_account_id' = ANY(:names) "
                "OR request->>'destination_account_id' = ANY(:names)"
            ),
            {"names": names},
        ).scalar_one()
    assert recorded == 0


def assert_account_not_recorded(client: Client, engine: Any, body: Any) -> None:
    account_id = body.get("account_id") if isinstance(body, dict) else None
    if isinstance(account_id, str) and IDENTIFIER.match(account_id):
        assert client.get(f"/v1/accounts/{account_id}").status_code == 404
    with engine.connect() as connection:
        recorded = connection.execute(
            # The external counter-accounts (@external:USD) exist once any account does.
            text(
                "SELECT count(*) FROM accounts WHERE account_id = ANY(:names) AND NOT is_external"
            ),
            {"names": strings_in(body)},
        ).scalar_one()
    assert recorded == 0


# --- amounts ----------------------------------------------------------------

BAD_AMOUNTS = [
    pytest.param(10.5, id="fractional_float"),
    pytest.param(10.0, id="float_with_zero_fraction"),
    pytest.param(1e3, id="float_in_exponent_notation"),
    pytest.param("10", id="numeric_string"),
    pytest.param("ten", id="word"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="minus_one"),
    pytest.param(-(10**15), id="large_negative"),
    pytest.param(10**15 + 1, id="one_over_the_maximum"),
    pytest.param(10**30, id="far_over_the_maximum"),
    pytest.param(None, id="null"),
    pytest.param([10], id="list"),
    pytest.param({"value": 10}, id="object"),
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_operation_with_a_bad_amount_is_refused_and_not_recorded(
    client: Client, engine: Any, new_id: Any, kind: str, amount: Any
) -> None:
    body = {**operation_body(kind, new_id), "amount": amount}
    assert_error(client.submit(kind, body), 422, "validation_error", "amount")
    assert_operation_not_recorded(client, engine, body)


@pytest.mark.parametrize("amount", [1, 10**15], ids=["one", "exactly_the_maximum"])
@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_operation_with_an_amount_at_the_edge_of_the_range_is_accepted(
    client: Client, new_id: Any, kind: str, amount: int
) -> None:
    body = {**operation_body(kind, new_id), "amount": amount}
    response = client.submit(kind, body)
    assert response.status_code == 202, response.text
    assert response.json()["request"]["amount"] == amount
    assert client.get(f"/v1/operations/{body['operation_id']}").status_code == 200


@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_amount_written_with_a_fraction_in_raw_json_is_refused(
    client: Client, engine: Any, new_id: Any, kind: str
) -> None:
    body = operation_body(kind, new_id)
    # 10.0 and 1E1 are floats in JSON even though they equal an integer.
    for written in ("10.0", "1E1", "1e1"):
        data = json.dumps(body).replace('"amount": 100', f'"amount": {written}')
        response = raw(client, "POST", f"/v1/{kind}", data=data, headers=JSON_HEADERS)
        assert_error(response, 422, "validation_error", "amount")
    assert_operation_not_recorded(client, engine, body)


# --- missing and unknown fields --------------------------------------------

REQUIRED_FIELDS = [
    pytest.param(kind, field, id=f"{kind}-{field}")
    for kind in ("credits", "debits")
    for field in ("operation_id", "account_id", "amount")
] + [
    pytest.param("transfers", field, id=f"transfers-{field}")
    for field in ("operation_id", "source_account_id", "destination_account_id", "amount")
]


@pytest.mark.parametrize(("kind", "field"), REQUIRED_FIELDS)
def test_operation_missing_a_required_field_is_refused_naming_it(
    client: Client, engine: Any, new_id: Any, kind: str, field: str
) -> None:
    body = operation_body(kind, new_id)
    del body[field]
    assert_error(client.submit(kind, body), 422, "validation_error", field)
    assert_operation_not_recorded(client, engine, body)


UNKNOWN_FIELDS = [
    pytest.param("amout", 100, id="typo_of_amount"),
    pytest.param("currency", "USD", id="currency"),
    pytest.param("Amount", 100, id="amount_in_other_case"),
    pytest.param("hold_id", "h-1", id="hold_id"),
    pytest.param("", 1, id="empty_name"),
]


@pytest.mark.parametrize(("field", "value"), UNKNOWN_FIELDS)
@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_operation_with_an_unknown_field_is_refused_naming_it(
    client: Client, engine: Any, new_id: Any, kind: str, field: str, value: Any
) -> None:
    body = {**operation_body(kind, new_id), field: value}
    assert_error(client.submit(kind, body), 422, "validation_error", field)
    assert_operation_not_recorded(client, engine, body)


def test_transfer_with_the_fields_of_a_credit_is_refused_naming_each_of_them(
    client: Client, engine: Any, new_id: Any
) -> None:
    body = operation_body("credits", new_id)
    error = assert_error(
        client.submit("transfers", body),
        422,
        "validation_error",
        "account_id",
        "source_account_id",
        "destination_account_id",
    )
    assert "amount" not in error["details"]
    assert_operation_not_recorded(client, engine, body)


# --- identifiers ------------------------------------------------------------

BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("a" * 65, id="65_characters"),
    pytest.param("has space", id="space"),
    pytest.param(" leading", id="leading_space"),
    pytest.param("a/b", id="slash"),
    pytest.param("ålice", id="unicode_letter"),
    pytest.param("١٢٣", id="unicode_digits"),
    pytest.param("abc\n", id="trailing_newline"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\x00b", id="nul_character"),
    pytest.param("a@b", id="at_sign"),
    pytest.param("@external:USD", id="external_counter_account"),
    pytest.param("a%2Fb", id="percent_sign"),
    pytest.param(123, id="integer"),
    pytest.param(None, id="null"),
    pytest.param(["a"], id="list"),
    pytest.param(True, id="boolean"),
]

ID_FIELDS = [
    pytest.param("credits", "operation_id", id="credit-operation_id"),
    pytest.param("credits", "account_id", id="credit-account_id"),
    pytest.param("debits", "operation_id", id="debit-operation_id"),
    pytest.param("debits", "account_id", id="debit-account_id"),
    pytest.param("transfers", "operation_id", id="transfer-operation_id"),
    pytest.param("transfers", "source_account_id", id="transfer-source_account_id"),
    pytest.param("transfers", "destination_account_id", id="transfer-destination_account_id"),
]


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize(("kind", "field"), ID_FIELDS)
def test_operation_with_a_bad_id_is_refused_naming_the_field(
    client: Client, engine: Any, new_id: Any, kind: str, field: str, value: Any
) -> None:
    body = {**operation_body(kind, new_id), field: value}
    assert_error(client.submit(kind, body), 422, "validation_error", field)
    assert_operation_not_recorded(client, engine, body)


def test_ids_of_64_characters_using_every_allowed_punctuation_are_accepted(
    client: Client, new_id: Any
) -> None:
    def longest(name: str) -> str:
        base = new_id(name)
        return base + "x" * (limits.identifier_length_max - len(base))

    body = {
        "operation_id": longest("Op.1_a:b"),
        "source_account_id": longest("Src.1_a:b"),
        "destination_account_id": longest("Dst.1_a:b"),
        "amount": 1,
    }
    assert all(len(body[k]) == 64 for k in body if k != "amount")
    response = client.submit("transfers", body)
    assert response.status_code == 202, response.text
    assert client.get(f"/v1/operations/{body['operation_id']}").status_code == 200


BAD_PATH_IDS = [
    pytest.param("a" * 65, id="65_characters"),
    pytest.param("has%20space", id="space"),
    pytest.param("abc%0A", id="trailing_newline"),
    pytest.param("%C3%A5lice", id="unicode_letter"),
    pytest.param("a%00b", id="nul_character"),
    pytest.param("%40external:USD", id="external_counter_account"),
]


@pytest.mark.parametrize("value", BAD_PATH_IDS)
@pytest.mark.parametrize(
    ("path", "field"),
    [
        pytest.param("/v1/accounts/{}", "account_id", id="account"),
        pytest.param("/v1/accounts/{}/entries", "account_id", id="entries"),
        pytest.param("/v1/operations/{}", "operation_id", id="operation"),
    ],
)
def test_bad_id_in_the_path_is_refused_naming_the_field(
    client: Client, path: str, field: str, value: str
) -> None:
    assert_error(client.get(path.format(value)), 422, "validation_error", field)


# --- accounts ---------------------------------------------------------------

BAD_CURRENCIES = [
    pytest.param("usd", id="lower_case"),
    pytest.param("Usd", id="mixed_case"),
    pytest.param("US", id="two_letters"),
    pytest.param("USDD", id="four_letters"),
    pytest.param("ABC", id="not_an_iso_code"),
    pytest.param(" USD", id="leading_space"),
    pytest.param("", id="empty"),
    pytest.param(840, id="iso_numeric_code"),
    pytest.param(None, id="null"),
    pytest.param(["USD"], id="list"),
]


@pytest.mark.parametrize("currency", BAD_CURRENCIES)
def test_account_with_a_bad_currency_is_refused_and_not_created(
    client: Client, engine: Any, new_id: Any, currency: Any
) -> None:
    body = {**account_body(new_id), "currency": currency}
    assert_error(client.post("/v1/accounts", body), 422, "validation_error", "currency")
    assert_account_not_recorded(client, engine, body)


BAD_OVERDRAFT_LIMITS = [
    pytest.param(-1, id="negative"),
    pytest.param(10.0, id="float_with_zero_fraction"),
    pytest.param(10.5, id="fractional_float"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param("10", id="numeric_string"),
    pytest.param(None, id="null"),
    pytest.param(10**15 + 1, id="over_the_maximum"),
]


@pytest.mark.parametrize("overdraft_limit", BAD_OVERDRAFT_LIMITS)
def test_account_with_a_bad_overdraft_limit_is_refused_and_not_created(
    client: Client, engine: Any, new_id: Any, overdraft_limit: Any
) -> None:
    body = {**account_body(new_id), "overdraft_limit": overdraft_limit}
    assert_error(client.post("/v1/accounts", body), 422, "validation_error", "overdraft_limit")
    assert_account_not_recorded(client, engine, body)


@pytest.mark.parametrize("account_id", BAD_IDS)
def test_account_with_a_bad_id_is_refused_and_not_created(
    client: Client, engine: Any, new_id: Any, account_id: Any
) -> None:
    body = {**account_body(new_id), "account_id": account_id}
    assert_error(client.post("/v1/accounts", body), 422, "validation_error", "account_id")
    assert_account_not_recorded(client, engine, body)


@pytest.mark.parametrize("field", ["account_id", "currency"])
def test_account_missing_a_required_field_is_refused_naming_it(
    client: Client, engine: Any, new_id: Any, field: str
) -> None:
    body = account_body(new_id)
    del body[field]
    assert_error(client.post("/v1/accounts", body), 422, "validation_error", field)
    assert_account_not_recorded(client, engine, body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("overdraft", 500, id="typo_of_overdraft_limit"),
        pytest.param("posted", 1000, id="posted_balance"),
        pytest.param("held", 0, id="held_balance"),
        pytest.param("meta", {}, id="typo_of_metadata"),
    ],
)
def test_account_with_an_unknown_field_is_refused_naming_it(
    client: Client, engine: Any, new_id: Any, field: str, value: Any
) -> None:
    body = {**account_body(new_id), field: value}
    assert_error(client.post("/v1/accounts", body), 422, "validation_error", field)
    assert_account_not_recorded(client, engine, body)


BAD_METADATA = [
    pytest.param("[]", id="array"),
    pytest.param('"note"', id="string"),
    pytest.param("42", id="number"),
    pytest.param("null", id="null"),
    pytest.param('{"rate": NaN}', id="nan"),
    pytest.param('{"rate": Infinity}', id="infinity"),
    pytest.param('{"rate": -Infinity}', id="minus_infinity"),
    pytest.param('{"rate": 1e400}', id="float_overflowing_to_infinity"),
    pytest.param('{"note": "a\\u0000b"}', id="nul_in_a_value"),
    pytest.param('{"a\\u0000b": 1}', id="nul_in_a_key"),
    pytest.param('{"list": [["x\\u0000"]]}', id="nul_deep_in_a_list"),
    pytest.param('{"note": "\\ud800"}', id="unpaired_surrogate"),
    pytest.param(
        '{"a": ' * limits.metadata_depth_max + "{}" + "}" * limits.metadata_depth_max,
        id="one_level_too_deep",
    ),
    pytest.param(
        '{"a": ' + "[" * limits.metadata_depth_max + "]" * limits.metadata_depth_max + "}",
        id="lists_too_deep",
    ),
    pytest.param(
        '{"note": "' + "x" * limits.metadata_size_max_bytes + '"}', id="over_the_size_limit"
    ),
    pytest.param('{"note": "' + "x" * 4_000_000 + '"}', id="4_mb"),
]


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_account_with_metadata_jsonb_cannot_store_is_refused_and_not_created(
    client: Client, engine: Any, new_id: Any, metadata: str
) -> None:
    body = account_body(new_id)
    data = json.dumps(body)[:-1] + f', "metadata": {metadata}}}'
    response = raw(client, "POST", "/v1/accounts", data=data, headers=JSON_HEADERS)
    assert_error(response, 422, "validation_error", "metadata")
    assert_account_not_recorded(client, engine, body)


def test_account_with_rich_metadata_at_the_depth_limit_is_created_and_read_back_unchanged(
    client: Client, new_id: Any
) -> None:
    nested: Any = "bottom"
    # The metadata object is the first level, "nested" the second.
    for _ in range(limits.metadata_depth_max - 1):
        nested = {"level": nested}
    metadata = {
        "nested": nested,
        "unicode": "ålice ✓ 😀",
        "numbers": [0, -1, 1.5, 10**20],
        "flags": [True, False, None],
    }
    body = {**account_body(new_id), "metadata": metadata}
    response = client.post("/v1/accounts", body)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == metadata
    assert client.account(body["account_id"])["metadata"] == metadata


def test_account_with_metadata_of_the_size_limit_as_compact_json_is_created(
    client: Client, new_id: Any
) -> None:
    # Sent with spaces, which do not count: {"note":"…"} is the limit exactly.
    overhead = len('{"note":""}')
    metadata = {"note": "x" * (limits.metadata_size_max_bytes - overhead)}
    body = {**account_body(new_id), "metadata": metadata}
    data = json.dumps(body, indent=4)
    response = raw(client, "POST", "/v1/accounts", data=data, headers=JSON_HEADERS)
    assert response.status_code == 201, response.text
    assert client.account(body["account_id"])["metadata"] == metadata


@pytest.mark.parametrize("overdraft_limit", [0, 10**15], ids=["zero", "exactly_the_maximum"])
def test_account_with_an_overdraft_limit_at_the_edge_of_the_range_is_created(
    client: Client, new_id: Any, overdraft_limit: int
) -> None:
    body = {**account_body(new_id), "overdraft_limit": overdraft_limit}
    response = client.post("/v1/accounts", body)
    assert response.status_code == 201, response.text
    assert response.json()["overdraft_limit"] == overdraft_limit


# --- bodies that are not a JSON object ---------------------------------------

BODY_LEVEL = ("_body", "_schema")

BAD_BODIES = [
    pytest.param(b'{"operation_id": "x", "amount": 1', JSON_HEADERS, BODY_LEVEL, id="truncated"),
    pytest.param(b"credit 100 to alice", JSON_HEADERS, BODY_LEVEL, id="plain_text"),
    pytest.param(b"{'amount': 1}", JSON_HEADERS, BODY_LEVEL, id="single_quotes"),
    pytest.param(b'[{"amount": 1}]', JSON_HEADERS, BODY_LEVEL, id="json_array"),
    pytest.param(b'"credit"', JSON_HEADERS, BODY_LEVEL, id="json_string"),
    pytest.param(b"42", JSON_HEADERS, BODY_LEVEL, id="json_number"),
    pytest.param(b"null", JSON_HEADERS, BODY_LEVEL, id="json_null"),
    pytest.param(b'{"amount": "\xff"}', JSON_HEADERS, BODY_LEVEL, id="invalid_utf8"),
    pytest.param(b"[" * 100_000, JSON_HEADERS, BODY_LEVEL, id="nested_100000_deep"),
    pytest.param(b'{"amount": 1' + b"0" * 5000 + b"}", JSON_HEADERS, BODY_LEVEL, id="5001_digits"),
    pytest.param(b"", JSON_HEADERS, None, id="empty"),
    pytest.param(b'{"amount": 1}', {"Content-Type": "text/plain"}, BODY_LEVEL, id="text_plain"),
    pytest.param(
        b"amount=1", {"Content-Type": "application/x-www-form-urlencoded"}, BODY_LEVEL, id="form"
    ),
]


@pytest.mark.parametrize(("data", "headers", "fields"), BAD_BODIES)
@pytest.mark.parametrize("path", ["/v1/credits", "/v1/transfers", "/v1/accounts"])
def test_body_that_is_not_a_json_object_is_refused_and_records_nothing(
    client: Client,
    engine: Any,
    path: str,
    data: bytes,
    headers: dict[str, str],
    fields: tuple[str, ...] | None,
) -> None:
    before = table_counts(engine)
    response = raw(client, "POST", path, data=data, headers=headers)
    error = assert_error(response, 422, "validation_error")
    if fields is None:
        # Without a JSON body nothing arrives, so every required field is missing.
        required = "account_id" if path != "/v1/transfers" else "source_account_id"
        assert required in error["details"], error
    else:
        assert set(error["details"]) & set(fields), error
    assert table_counts(engine) == before


REFUSED_JSON = [
    pytest.param(
        b'{"operation_id": "x", "operation_id": "y"}', "given more than once", id="repeated_key"
    ),
    pytest.param(
        b'{"a": {"b": 1, "b": 2}}', "given more than once", id="repeated_key_in_a_nested_object"
    ),
    pytest.param(b'{"a": ' * 65 + b"1" + b"}" * 65, "64 levels", id="objects_nested_65_deep"),
    pytest.param(b"[" * 1000 + b"]" * 1000, "64 levels", id="array_nested_1000_deep"),
]


@pytest.mark.parametrize(("data", "reason"), REFUSED_JSON)
@pytest.mark.parametrize(
    "path", ["/v1/credits", "/v1/transfers", "/v1/accounts", "/v1/operations/batch"]
)
def test_json_body_with_a_repeated_key_or_nested_too_deep_is_refused_saying_why(
    client: Client, engine: Any, path: str, data: bytes, reason: str
) -> None:
    before = table_counts(engine)
    response = raw(client, "POST", path, data=data, headers=JSON_HEADERS)
    error = assert_error(response, 422, "validation_error", "_body")
    assert reason in error["details"]["_body"][0], error
    assert table_counts(engine) == before


def test_credit_with_its_amount_given_twice_is_refused_not_read_as_the_last_one(
    client: Client, engine: Any, new_id: Any
) -> None:
    body = operation_body("credits", new_id)
    data = json.dumps(body)[:-1] + ', "amount": 1000000}'
    response = raw(client, "POST", "/v1/credits", data=data, headers=JSON_HEADERS)
    error = assert_error(response, 422, "validation_error", "_body")
    assert error["details"]["_body"] == ['The key "amount" is given more than once.']
    assert_operation_not_recorded(client, engine, body)


def test_credit_with_metadata_nested_to_the_depth_limit_is_parsed_and_judged_by_its_schema(
    client: Client, new_id: Any
) -> None:
    # 64 levels in all: the body, then 63 objects. The parse accepts it; the
    # schema then names the unknown field (operations carry no such field).
    body = operation_body("credits", new_id)
    data = json.dumps(body)[:-1] + ', "note": ' + '{"a": ' * 62 + "1" + "}" * 62 + "}"
    response = raw(client, "POST", "/v1/credits", data=data, headers=JSON_HEADERS)
    assert_error(response, 422, "validation_error", "note")


@pytest.mark.parametrize("path", ["/v1/credits", "/v1/operations/batch"])
def test_body_over_the_size_limit_is_refused_with_413_and_records_nothing(
    client: Client, engine: Any, path: str
) -> None:
    before = table_counts(engine)
    data = b'{"operation_id": "' + b"x" * limits.request_body_bytes_max + b'"}'
    response = raw(client, "POST", path, data=data, headers=JSON_HEADERS)
    assert_error(response, 413, "validation_error")
    assert table_counts(engine) == before


def test_valid_body_sent_as_text_plain_is_not_applied(
    client: Client, engine: Any, new_id: Any
) -> None:
    body = operation_body("credits", new_id)
    response = raw(
        client, "POST", "/v1/credits", data=json.dumps(body), headers={"Content-Type": "text/plain"}
    )
    error = assert_error(response, 422, "validation_error", "_body")
    # Said as such, not as every field missing (curl's -d without -H sends a form).
    assert error["details"] == {"_body": [bodies.NOT_JSON_MESSAGE]}, error
    assert_operation_not_recorded(client, engine, body)


# --- query parameters -------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": "0"}, "limit", id="limit_0"),
        pytest.param({"limit": "501"}, "limit", id="limit_501"),
        pytest.param({"limit": "-1"}, "limit", id="limit_negative"),
        pytest.param({"limit": "x"}, "limit", id="limit_x"),
        pytest.param({"limit": "1.5"}, "limit", id="limit_fraction"),
        pytest.param({"limit": ""}, "limit", id="limit_empty"),
        pytest.param({"cursor": "abc"}, "cursor", id="cursor_letters"),
        pytest.param({"cursor": "-1"}, "cursor", id="cursor_negative"),
        pytest.param({"cursor": "1.5"}, "cursor", id="cursor_fraction"),
        pytest.param({"cursor": ""}, "cursor", id="cursor_empty"),
        pytest.param({"cursor": "1" * 20}, "cursor", id="cursor_20_digits"),
        pytest.param({"cursor": "12\n"}, "cursor", id="cursor_trailing_newline"),
    ],
)
def test_entries_with_a_bad_query_parameter_is_refused_naming_it(
    client: Client, new_id: Any, params: dict[str, str], field: str
) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    response = client.get(f"/v1/accounts/{account_id}/entries", params=params)
    assert_error(response, 422, "validation_error", field)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "1"}, id="limit_1"),
        pytest.param({"limit": "500"}, id="limit_500"),
        pytest.param({"cursor": "0"}, id="cursor_0"),
        pytest.param({"cursor": "9" * 19}, id="cursor_beyond_bigint"),
    ],
)
def test_entries_with_a_query_parameter_at_the_edge_of_its_range_is_answered(
    client: Client, new_id: Any, params: dict[str, str]
) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    response = client.get(f"/v1/accounts/{account_id}/entries", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "wait",
    ["-1", "31", "30.5", "x", "nan", "inf", ""],
    ids=["minus_1", "31", "30.5", "x", "nan", "inf", "empty"],
)
def test_operation_read_with_a_bad_wait_is_refused_naming_it(
    client: Client, new_id: Any, wait: str
) -> None:
    response = client.get(f"/v1/operations/{new_id('op')}", params={"wait": wait})
    assert_error(response, 422, "validation_error", "wait")


@pytest.mark.parametrize("wait", ["0", "0.5", "30"])
def test_operation_read_with_a_wait_in_range_is_answered(
    client: Client, new_id: Any, wait: str
) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    body = {"operation_id": new_id("op"), "account_id": account_id, "amount": 1}
    assert client.submit("credits", body).status_code == 202
    response = client.get(f"/v1/operations/{body['operation_id']}", params={"wait": wait})
    assert response.status_code == 200, response.text
    assert response.json()["operation_id"] == body["operation_id"]


def test_unknown_operation_read_with_the_longest_wait_answers_404_at_once(
    client: Client, new_id: Any
) -> None:
    response = client.get(f"/v1/operations/{new_id('op')}", params={"wait": "30"})
    assert_error(response, 404, "not_found")
    assert response.elapsed.total_seconds() < 5


# --- authentication -----------------------------------------------------------

BAD_AUTHORIZATIONS = [
    pytest.param(None, id="no_header"),
    pytest.param("", id="empty_header"),
    pytest.param("Bearer wrong-token", id="wrong_token"),
    pytest.param("Basic dXNlcjpwYXNzd29yZA==", id="basic_scheme"),
    pytest.param("Bearer", id="bearer_with_nothing"),
    pytest.param("Bearer ", id="bearer_with_a_space"),
    pytest.param("Token {token}", id="other_scheme_with_the_token"),
    pytest.param("{token}", id="token_without_scheme"),
    pytest.param("Bearer {token}x", id="token_with_a_suffix"),
    pytest.param("Bearer x{token}", id="token_with_a_prefix"),
    pytest.param("Bearer {token_prefix}", id="token_missing_its_last_character"),
    pytest.param("Bearer {token},second-token-of-the-session", id="two_tokens_joined"),
]


def authorization(template: str | None, token: str) -> str | None:
    if template is None:
        return None
    return template.format(token=token, token_prefix=token[:-1])


def assert_unauthorized(response: requests.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize("template", BAD_AUTHORIZATIONS)
def test_operation_without_a_valid_token_is_refused_and_not_recorded(
    client: Client, settings: Any, engine: Any, new_id: Any, template: str | None
) -> None:
    body = operation_body("credits", new_id)
    header = authorization(template, settings.api_tokens[0])
    response = raw(client, "POST", "/v1/credits", json=body, headers={"Authorization": header})
    assert_unauthorized(response)
    assert_operation_not_recorded(client, engine, body)


@pytest.mark.parametrize("template", BAD_AUTHORIZATIONS)
def test_account_creation_without_a_valid_token_is_refused_and_not_recorded(
    client: Client, settings: Any, engine: Any, new_id: Any, template: str | None
) -> None:
    body = account_body(new_id)
    header = authorization(template, settings.api_tokens[0])
    response = raw(client, "POST", "/v1/accounts", json=body, headers={"Authorization": header})
    assert_unauthorized(response)
    assert_account_not_recorded(client, engine, body)


V1_ROUTES = [
    pytest.param("GET", "/v1/accounts/{account}", id="get_account"),
    pytest.param("GET", "/v1/accounts/{account}/entries", id="get_entries"),
    pytest.param("GET", "/v1/operations/{operation}", id="get_operation"),
    pytest.param("POST", "/v1/debits", id="post_debit"),
    pytest.param("POST", "/v1/transfers", id="post_transfer"),
    pytest.param("GET", "/v1/no-such-route", id="unknown_route"),
    pytest.param("DELETE", "/v1/accounts", id="wrong_method"),
]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_refuses_a_request_without_a_token_before_anything_else(
    client: Client, new_id: Any, method: str, path: str
) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    url = path.format(account=account_id, operation=new_id("op"))
    # Even a malformed body is not looked at before the token.
    response = raw(client, method, url, data=b"{", headers={"Authorization": None, **JSON_HEADERS})
    assert_unauthorized(response)


def test_unicode_in_the_authorization_header_is_refused_not_crashed(client: Client) -> None:
    response = raw(
        client,
        "GET",
        "/v1/accounts/anyone",
        headers={"Authorization": "Bearer tökén".encode("latin-1")},
    )
    assert_unauthorized(response)


def test_every_configured_token_is_accepted(client: Client, settings: Any, new_id: Any) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    for token in settings.api_tokens:
        response = raw(
            client,
            "GET",
            f"/v1/accounts/{account_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text


def test_bearer_scheme_is_accepted_in_any_case(client: Client, settings: Any, new_id: Any) -> None:
    account_id = new_id("account")
    client.create_account(account_id)
    for scheme in ("bearer", "BEARER", "bEaReR"):
        header = f"{scheme} {settings.api_tokens[0]}"
        response = raw(
            client, "GET", f"/v1/accounts/{account_id}", headers={"Authorization": header}
        )
        assert response.status_code == 200, (scheme, response.text)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token"], ids=["without_a_token", "with_a_wrong_token"]
)
def test_health_checks_need_no_token(client: Client, path: str, header: str | None) -> None:
    response = raw(client, "GET", path, headers={"Authorization": header})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
