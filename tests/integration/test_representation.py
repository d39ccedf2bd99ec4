"""The event body PostgreSQL renders is the operation as the API renders it, for any row.

Both renderings are made from `representation.OPERATION_FIELDS`: the API's
in Python, the event's in SQL (`adapters.outbox_reads`). What is held is
equality as parsed JSON, the body being the representation plus
`schema_version`: the text itself differs (the API escapes non-ASCII, keeps
the list's key order), and need not match, since the SQL statement is the
only renderer of published bodies, which makes every copy of an event the
same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from billing.adapters import jsoncodec, tables
from billing.adapters.ledger_db import record_from_row
from billing.adapters.outbox_reads import unpublished_events
from billing.domain import OperationType, Status
from billing.representation import EVENT_SCHEMA_VERSION, render_operation
from tests.support import stack

# PostgreSQL text holds any character but NUL; Python's str may hold lone surrogates.
pg_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
# Quotes, backslashes, control characters and wide ones come up often.
awkward = st.sampled_from(['"', "\\", "'", "\n", "\x01", "\x1f", "\x7f", "\u2028", "é", "💸"])
identifiers = (
    st.lists(st.one_of(awkward, pg_text), min_size=1, max_size=10)
    .map("".join)
    .filter(lambda s: 1 <= len(s) <= 80)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | pg_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(pg_text, children, max_size=3)
    ),
    max_leaves=12,
)
moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
balances = st.dictionaries(
    identifiers,
    st.fixed_dictionaries({"posted": st.integers(), "held": st.integers()}),
    max_size=3,
)


@st.composite
def operation_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row of `operations` as the table's constraints allow it."""
    status = draw(st.sampled_from(list(Status)))
    failed = status is Status.failed
    operation_type = draw(st.sampled_from([t.value for t in OperationType]))
    request = draw(st.dictionaries(pg_text, json_values, max_size=4))
    if draw(st.booleans()):
        request["metadata"] = draw(json_values)
    reversals = (
        draw(st.lists(identifiers, min_size=1, max_size=3))
        if operation_type in ("credit", "debit", "transfer", "capture") and draw(st.booleans())
        else None
    )
    return {
        "operation_id": draw(identifiers),
        "type": operation_type,
        "status": status.value,
        "request": json.dumps(request),
        "reversed": draw(st.integers(1, 2**62)) if reversals else 0,
        "reversals": reversals,
        "error_code": draw(identifiers.filter(lambda s: len(s) <= 32)) if failed else None,
        "error_message": draw(st.none() | pg_text) if failed else None,
        # SQL NULL, a jsonb null (which Python reads as None too) or the balances.
        "balances": draw(st.none() | st.just("null") | balances.map(json.dumps)),
        "accepted_at": draw(moments),
        "completed_at": None if status is Status.pending else draw(moments),
    }


_INSERT_OPERATION = text(
    "INSERT INTO operations (operation_id, type, status, request, error_code, error_message, "
    "balances, accepted_at, completed_at, reversed, reversals) VALUES (:operation_id, :type, "
    ":status, CAST(:request AS jsonb), :error_code, :error_message, CAST(:balances AS jsonb), "
    ":accepted_at, :completed_at, :reversed, :reversals)"
)
_INSERT_EVENT = text(
    "WITH e AS (INSERT INTO outbox (message_id, routing_key, event_seq) "
    "VALUES (:id, 'operation.x.y', 7) "
    "RETURNING event_id) INSERT INTO outbox_pending SELECT event_id FROM e"
)


@pytest.fixture(scope="module")
def connection() -> Iterator[Any]:
    """One transaction on a database of its own, rolled back at the end."""
    settings_ = stack.make_settings()
    stack.prepare_database(settings_)
    engine = stack.engine_for(settings_)
    try:
        with engine.connect() as connection:
            yield connection
            connection.rollback()
    finally:
        engine.dispose()
        stack.drop_database(settings_)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(row=operation_rows())
def test_the_event_body_is_the_operation_as_the_api_renders_it(
    connection: Any, row: dict[str, Any]
) -> None:
    savepoint = connection.begin_nested()
    try:
        connection.execute(_INSERT_OPERATION, row)
        connection.execute(_INSERT_EVENT, {"id": row["operation_id"]})
        (event,) = unpublished_events(connection, [row["operation_id"]])
        operations = tables.operations
        record = record_from_row(
            connection.execute(
                select(operations).where(operations.c.operation_id == row["operation_id"])
            ).one()
        )
    finally:
        savepoint.rollback()
    body = json.loads(jsoncodec.text_of(event.body))
    assert list(body) == sorted(body)
    expected = {**render_operation(record, as_completed=True), "event_seq": 7}
    assert body == {**expected, "schema_version": EVENT_SCHEMA_VERSION}
