"""Lists sent as one array literal arrive in PostgreSQL element for element."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from billing.adapters.pgarrays import int_array, text_array, timestamp_array

AWKWARD_TEXTS = [
    "plain",
    "",
    "NULL",
    "with space",
    'quote " inside',
    'back\\slash and \\" both',
    "comma, brace { } and semicolon;",
    "single ' quote",
    "line\nbreak\ttab",
    "ünïcödé ✓ 漢字",
    None,
]


def round_trip(engine: Any, literal: str, pg_type: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(f"SELECT unnest(CAST(:values AS {pg_type})) AS v"), {"values": literal}
            ).scalars()
        )


def test_texts_with_quotes_backslashes_and_nulls_arrive_unchanged(engine: Any) -> None:
    assert round_trip(engine, text_array(AWKWARD_TEXTS), "text[]") == AWKWARD_TEXTS
    assert round_trip(engine, text_array(AWKWARD_TEXTS), "varchar[]") == AWKWARD_TEXTS


def test_json_documents_arrive_as_the_same_documents(engine: Any) -> None:
    documents = ['{"a": "x\\"y", "b": [1, 2], "c": "back\\\\slash"}', "null", None]
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT CAST(v AS text) FROM unnest(CAST(:values AS json[])) AS t(v)"),
            {"values": text_array(documents)},
        ).scalars()
        assert list(rows) == documents


@pytest.mark.parametrize("values", [[], [0], [1, -1, 2**63 - 1, -(2**63), None]])
def test_integers_including_the_bigint_limits_arrive_unchanged(
    engine: Any, values: list[int | None]
) -> None:
    assert round_trip(engine, int_array(values), "bigint[]") == values


def test_moments_keep_their_instant_whatever_their_zone(engine: Any) -> None:
    moments = [
        datetime(2026, 12, 2, 17, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 2, 19, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        None,
    ]
    assert round_trip(engine, timestamp_array(moments), "timestamptz[]") == moments


def test_a_naive_moment_is_refused_rather_than_shifted() -> None:
    with pytest.raises(AssertionError, match="naive"):
        timestamp_array([datetime(2026, 12, 2, 17, 0)])


def test_text_with_a_nul_character_is_refused_rather_than_split() -> None:
    with pytest.raises(ValueError, match="NUL"):
        text_array(["one\x00two", "three"])


def test_an_empty_list_is_an_empty_array(engine: Any) -> None:
    assert round_trip(engine, text_array([]), "text[]") == []
