"""The read API's query values: RFC 3339 moments, cursors, and the query schemas that load them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from marshmallow import ValidationError

from billing import pages
from billing.adapters.read_schemas import (
    AccountQuerySchema,
    BalancesQuerySchema,
    OperationQuerySchema,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T18:00:00Z", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24t18:00:00z", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24 18:00:00+00:00", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24T20:30:00+02:30", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24T18:00:00-05:00", datetime(2026, 11, 24, 23, tzinfo=UTC)),
        ("2026-11-24T18:00:00.5Z", datetime(2026, 11, 24, 18, 0, 0, 500_000, tzinfo=UTC)),
        ("2026-11-24T18:00:00.123456789Z", datetime(2026, 11, 24, 18, 0, 0, 123_456, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
    ],
)
def test_an_rfc_3339_moment_is_read_in_utc(text: str, expected: datetime) -> None:
    assert pages.parse_moment(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24T18:00:00",  # naive
        "2026-11-24",
        "20261124T180000Z",
        "2026-11-24T18:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T18:00:00+24:00",
        "2026-11-24T18:00:00+02:60",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before the first representable moment
        "2026-11-24T18:00:00Z\n",
        "٢٠٢٦-11-24T18:00:00Z",  # digits of another script
        "",
        "yesterday",
    ],
)
def test_anything_else_is_not_a_moment(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        pages.parse_moment(text)


def test_an_operations_cursor_reads_back_as_its_position() -> None:
    accepted_at = datetime(2026, 11, 24, 18, 0, 0, 123_456, tzinfo=UTC)
    for operation_id in ("op-1", "a:b:c", "@expiry:hold-1", "x" * 64):
        cursor = pages.operations_cursor(accepted_at, operation_id)
        assert pages.parse_operations_cursor(cursor) == (accepted_at, operation_id)
    assert pages.operations_cursor(accepted_at, "op-1") == "1795543200123456:op-1"
    before_1970 = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert pages.parse_operations_cursor(pages.operations_cursor(before_1970, "o")) == (
        before_1970,
        "o",
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "1795284000123456",
        "1795284000123456:",
        ":op-1",
        "12.5:op-1",
        "1795284000123456:op 1",
        "1795284000123456:op/1",
        "1795284000123456:" + "x" * 81,
        "9" * 19 + ":op-1",  # beyond year 9999
        "-" + "9" * 18 + ":op-1",
        "9" * 20 + ":op-1",
        "1795284000123456:op-1\n",
    ],
)
def test_a_cursor_that_is_no_position_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        pages.parse_operations_cursor(cursor)


def load(schema: Any, query: dict[str, Any]) -> dict[str, Any]:
    return dict(schema.load(query))


def problems(schema: Any, query: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as refused:
        schema.load(query)
    return dict(refused.value.messages)  # type: ignore[arg-type]


def test_the_operations_query_has_its_defaults_and_loads_its_values() -> None:
    assert load(OperationQuerySchema(), {}) == {
        "account_id": None,
        "type": None,
        "status": None,
        "since": None,
        "until": None,
        "limit": 100,
        "cursor": None,
    }
    loaded = load(
        OperationQuerySchema(),
        {
            "account_id": "alice",
            "type": "expiry",
            "status": "failed",
            "since": "2026-01-01T00:00:00Z",
            "until": "2026-01-02T00:00:00+01:00",
            "limit": "500",
            "cursor": "5:op-1",
        },
    )
    assert loaded["since"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert loaded["until"] == datetime(2026, 1, 1, 23, tzinfo=UTC)
    assert loaded["cursor"] == (datetime(1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC), "op-1")
    assert loaded["limit"] == 500


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"type": "refund"}, "type"),
        ({"type": "Credit"}, "type"),
        ({"status": "done"}, "status"),
        ({"account_id": "@external:USD"}, "account_id"),
        ({"account_id": "x" * 65}, "account_id"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"until": "soon"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "1e2"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_operations_query_names_its_field(query: dict[str, Any], field: str) -> None:
    assert field in problems(OperationQuerySchema(), query)


def test_the_type_filter_takes_every_operation_type_the_ledger_has() -> None:
    from billing.domain import OperationType

    for kind in OperationType:
        assert load(OperationQuerySchema(), {"type": kind.value})["type"] == kind.value


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"currency": "usd"}, "currency"),
        ({"currency": "ABC"}, "currency"),
        ({"cursor": "@external:USD"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"limit": "-1"}, "limit"),
    ],
)
def test_a_bad_accounts_query_names_its_field(query: dict[str, Any], field: str) -> None:
    assert field in problems(AccountQuerySchema(), query)


def test_balances_at_a_moment_need_one_that_has_come() -> None:
    now = datetime.now(UTC)
    assert load(BalancesQuerySchema(), {"at": now.isoformat()})["at"] == now
    assert "at" in problems(BalancesQuerySchema(), {})
    later = (now + timedelta(seconds=5)).isoformat()
    assert problems(BalancesQuerySchema(), {"at": later}) == {"at": ["Must not be in the future."]}
    assert "at" in problems(BalancesQuerySchema(), {"at": "2026-01-01T00:00:00"})
