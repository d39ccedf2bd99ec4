"""Reading unpublished events from the outbox, outcome bodies rendered by PostgreSQL.

An operation's outcome event is recorded without a body: the operation's
row holds all of it. PostgreSQL renders the body from that row as JSON text
in the statement that reads the event, and the publisher sends the text as
it is. Read back into Python and rendered there instead, the result task
decoded each operation's request and balances, built its record, rendered
it and encoded it again: 30 us of the worker's CPU per event and 10 of
PostgreSQL's, against 4 and 14 this way (500 completed transfers at a time).

The body has the fields and values of the API's representation of the
operation (`service.render_operation`) plus `schema_version`, top-level
keys in sorted order; the request and balances are PostgreSQL's text of
their `jsonb` (`{"amount": 5, ...}`). The statement is the only renderer of
published outcome bodies, so every copy of an event is the same text,
whichever publisher sends it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from billing.adapters.pgarrays import text_array
from billing.ports import Event

_TIMESTAMP = '\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\''


def _timestamp(column: str) -> str:
    # As Python's isoformat(timespec="microseconds") spells a UTC time.
    return f"COALESCE('\"' || to_char({column} AT TIME ZONE 'UTC', {_TIMESTAMP}) || '\"', 'null')"


def _string(column: str) -> str:
    return f"COALESCE(CAST(to_json({column}) AS text), 'null')"


# NULL when the event has neither a body nor an operation row (a bug: asserted).
_BODY = (
    "CASE WHEN o.body IS NOT NULL THEN CAST(o.body AS text) "
    "WHEN op.operation_id IS NOT NULL THEN "
    f"""'{{"accepted_at":' || {_timestamp("op.accepted_at")} || ','"""
    """ || CASE WHEN op.balances IS NULL THEN '' """
    """ELSE '"balances":' || CAST(op.balances AS text) || ',' END"""
    f""" || '"completed_at":' || {_timestamp("op.completed_at")}"""
    """ || ',"error":' || CASE WHEN op.error_code IS NULL THEN 'null' """
    f"""ELSE '{{"code":' || {_string("op.error_code")} """
    f"""|| ',"message":' || {_string("op.error_message")} || '}}' END"""
    # Metadata is shown apart from the request, {} when none was given.
    """ || ',"metadata":' || COALESCE(CAST(op.request -> 'metadata' AS text), '{}')"""
    f""" || ',"operation_id":' || {_string("op.operation_id")}"""
    """ || ',"request":' || CAST(op.request - 'metadata' AS text)"""
    # As the operation completed, before any reversal of it: every copy the same.
    """ || CASE WHEN op.type IN ('credit', 'debit', 'transfer', 'capture') """
    """THEN ',"reversals":[],"reversed"\\:0' ELSE '' END"""
    # A colon before a digit would read as a bind parameter: escaped.
    """ || ',"schema_version"\\:1,"status":' """
    f"""|| {_string("op.status")} || ',"type":' || {_string("op.type")} || '}}' """
    "END AS body"
)
_EVENT_COLUMNS = f"o.event_id, o.message_id, o.routing_key, {_BODY} "
_WITH_OPERATION = "LEFT JOIN operations op ON o.body IS NULL AND op.operation_id = o.message_id"

# Each id is looked up on its own (LATERAL ... LIMIT 1: one row of the unique
# index): as `message_id = ANY(:ids)` on a table without fresh statistics,
# PostgreSQL read the whole outbox in parallel to find 500 events.
_UNPUBLISHED_EVENTS = text(
    f"SELECT {_EVENT_COLUMNS}"
    "FROM unnest(CAST(:ids AS varchar[])) AS i(message_id) CROSS JOIN LATERAL ("
    "SELECT outbox.event_id, message_id, routing_key, body FROM outbox "
    "JOIN outbox_pending ON outbox_pending.event_id = outbox.event_id "
    f"WHERE outbox.message_id = i.message_id LIMIT 1) o {_WITH_OPERATION}"
)
# Never waits: events another relay holds are skipped (it is publishing them).
# Each pending mark looks up its own outbox row (LATERAL ... LIMIT 1, which
# the planner cannot turn into a join): as a plain join PostgreSQL merged the
# two tables in event order and walked every published event, the whole
# outbox, to reach the few pending ones (136 ms a call at 170,000 events,
# growing without end). This way a call reads the pending marks and their
# rows only.
_CLAIM_UNPUBLISHED_EVENTS = text(
    f"SELECT {_EVENT_COLUMNS}"
    "FROM outbox_pending p CROSS JOIN LATERAL ("
    "SELECT event_id, message_id, routing_key, body FROM outbox "
    "WHERE outbox.event_id = p.event_id "
    "AND outbox.created_at < now() - make_interval(secs => :older_than_s) LIMIT 1) o "
    f"{_WITH_OPERATION} ORDER BY p.event_id LIMIT :n FOR UPDATE OF p SKIP LOCKED"
)


def unpublished_events(connection: Connection, message_ids: list[str]) -> list[Event]:
    """The named events still waiting to be published, with their bodies."""
    # Each id once: the statement looks up every id it is given.
    unique_ids = dict.fromkeys(message_ids)
    rows = connection.execute(_UNPUBLISHED_EVENTS, {"ids": text_array(unique_ids)})
    return [_event_from_row(row) for row in rows]


def claim_unpublished_events(
    connection: Connection, older_than_s: float, limit: int
) -> list[Event]:
    """The oldest events left unpublished this long, locked for this transaction."""
    rows = connection.execute(_CLAIM_UNPUBLISHED_EVENTS, {"older_than_s": older_than_s, "n": limit})
    return [_event_from_row(row) for row in rows]


def _event_from_row(row: Any) -> Event:
    assert row.body is not None, f"event {row.message_id}: no body and no operation"
    return Event(row.message_id, row.routing_key, row.body, row.event_id)
