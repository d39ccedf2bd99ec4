"""Reading unpublished events from the outbox, outcome bodies rendered by PostgreSQL.

An operation's outcome event is recorded without a body: the operation's
row holds all of it. PostgreSQL renders the body from that row as JSON text
in the statement that reads the event, and the publisher sends the text as
it is. Read back into Python and rendered there instead, the result task
decoded each operation's request and balances, built its record, rendered
it and encoded it again: 30 us of the worker's CPU per event and 10 of
PostgreSQL's, against 4 and 14 this way (500 completed transfers at a time).

The body has the fields and values of the API's representation of the
operation plus `event_seq` (its place in the event feed) and
`schema_version`, top-level keys in sorted order; the
rendering is generated from the representation's list of fields
(`representation.OPERATION_FIELDS`), from which the API's rendering is made
too, and a property test holds the two equal. The request and balances are
PostgreSQL's text of their `jsonb` (`{"amount": 5, ...}`). The statement is the only renderer of
published outcome bodies, so every copy of an event is the same text,
whichever publisher sends it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

from billing.adapters.database import translated_errors
from billing.adapters.event_feed import BY_KEY
from billing.adapters.pgarrays import text_array
from billing.adapters.prepared import prepared
from billing.feed import FeedEvent
from billing.ports import Event
from billing.representation import EVENT_SCHEMA_VERSION, OPERATION_FIELDS, Field, FieldKind

_TIMESTAMP = '\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\''
# A part of a concatenation: (True, text of a constant) or (False, an SQL expression).
_Part = tuple[bool, str]


def _timestamp(column: str) -> str:
    # As Python's isoformat(timespec="microseconds") spells a UTC time.
    return f"COALESCE('\"' || to_char({column} AT TIME ZONE 'UTC', {_TIMESTAMP}) || '\"', 'null')"


def _string(column: str) -> str:
    return f"COALESCE(CAST(to_json({column}) AS text), 'null')"


def _json(column: str) -> str:
    return f"COALESCE(CAST({column} AS text), 'null')"


def _error(code: str, message: str) -> str:
    return (
        f"CASE WHEN {code} IS NULL THEN 'null' "
        f"ELSE '{{\"code\":' || {_string(code)} "
        f"|| ',\"message\":' || {_string(message)} || '}}' END"
    )


def _integer(column: str) -> str:
    return f"COALESCE(CAST({column} AS text), 'null')"


def _strings(column: str) -> str:
    return f"COALESCE(CAST(array_to_json({column}) AS text), '[]')"


def _request(column: str) -> str:
    return f"CAST({column} - 'metadata' AS text)"


def _metadata(column: str) -> str:
    return f"COALESCE(CAST({column} -> 'metadata' AS text), '{{}}')"


_RENDER = {
    FieldKind.string: _string,
    FieldKind.timestamp: _timestamp,
    FieldKind.json: _json,
    FieldKind.integer: _integer,
    FieldKind.strings: _strings,
    FieldKind.request: _request,
    FieldKind.metadata: _metadata,
}


def _value(field: Field) -> _Part:
    if field.when_completed is not None:
        return (True, field.when_completed)
    columns = [f"op.{column}" for column in field.columns]
    if field.kind is FieldKind.error:
        return (False, _error(*columns))
    return (False, _RENDER[field.kind](columns[0]))


def _null(field: Field) -> str:
    # Python reads a jsonb null as None too, and leaves the field out for it.
    column = f"op.{field.columns[0]}"
    if field.kind is FieldKind.json:
        return f"({column} IS NULL OR jsonb_typeof({column}) = 'null')"
    return f"{column} IS NULL"


def _left_out(field: Field) -> str | None:
    """The SQL condition that leaves the field out of a body, or None when it never is."""
    conditions = [_null(field)] if field.absent_when_null else []
    if field.types is not None:
        listed = ", ".join(f"'{t}'" for t in sorted(field.types))
        conditions.append(f"op.type NOT IN ({listed})")
    return " OR ".join(conditions) or None


def _joined(parts: list[_Part]) -> str:
    """The SQL concatenation of the parts, adjacent constants merged into one.

    Each `||` copies the text so far: merged, a body takes ten fewer
    copies a row (3% of the read of 500 events).
    """
    merged: list[_Part] = []
    for constant, part in parts:
        if constant and merged and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + part)
        else:
            merged.append((constant, part))
    return " || ".join(_constant(part) if constant else part for constant, part in merged)


def _constant(value: str) -> str:
    # A colon escaped: text() would read `:1` as a bind parameter.
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


def _body_of_operation() -> str:
    """The SQL text of an outcome event's body, from the representation's list of fields.

    Keys in sorted order, `schema_version` among them; each field's text
    ends with the comma before the next, so a field left out when NULL
    takes its comma with it (the last key must always be there).
    """
    # (key, its value, the SQL condition that leaves it out or None)
    keys = [(f.name, _value(f), _left_out(f)) for f in OPERATION_FIELDS]
    keys.append(("schema_version", (True, f"{EVENT_SCHEMA_VERSION:d}"), None))
    # The event's place in the feed.
    keys.append(("event_seq", (False, "CAST(o.event_seq AS text)"), None))
    keys.sort(key=lambda key: key[0])
    assert keys[-1][2] is None, f"the last key, {keys[-1][0]}, may not be left out"
    parts: list[_Part] = [(True, "{")]
    for position, (name, value, left_out_when) in enumerate(keys, start=1):
        piece = [(True, f'"{name}":'), value]
        if position < len(keys):
            piece.append((True, ","))
        if left_out_when is None:
            parts += piece
        else:
            parts.append((False, f"CASE WHEN {left_out_when} THEN '' ELSE {_joined(piece)} END"))
    parts.append((True, "}"))
    return _joined(parts)


# NULL when the event has neither a body nor an operation row (a bug: asserted).
# A stored body (a hold's expiry) gets its feed number as its first key.
_BODY = (
    "CASE WHEN o.body IS NOT NULL THEN "
    """'{"event_seq":' || o.event_seq || CASE WHEN substr(CAST(o.body AS text), 2) """
    """~ '^\\s*\\}' THEN '' ELSE ',' END || substr(CAST(o.body AS text), 2) """
    f"WHEN op.operation_id IS NOT NULL THEN {_body_of_operation()} "
    "END AS body"
)
_EVENT_COLUMNS = f"o.event_id, o.message_id, o.routing_key, {_BODY} "
_WITH_OPERATION = "LEFT JOIN operations op ON o.body IS NULL AND op.operation_id = o.message_id"

# Each id is looked up on its own (LATERAL ... LIMIT 1: one row of the unique
# index): as `message_id = ANY(:ids)` on a table without fresh statistics,
# PostgreSQL read the whole outbox in parallel to find 500 events. Its
# pending mark too: joined inside that lookup, PostgreSQL (statistics taken
# while no mark was pending) read every pending mark for each event, 175 ms
# for 500 events with a few thousand pending, the batch scenario at half its
# rate.
_UNPUBLISHED_EVENTS = text(
    f"SELECT {_EVENT_COLUMNS}"
    "FROM unnest(CAST(:ids AS varchar[])) AS i(message_id) CROSS JOIN LATERAL ("
    "SELECT event_id, message_id, routing_key, body, event_seq FROM outbox "
    "WHERE outbox.message_id = i.message_id LIMIT 1) o CROSS JOIN LATERAL ("
    "SELECT 1 FROM outbox_pending p WHERE p.event_id = o.event_id LIMIT 1) pending "
    f"{_WITH_OPERATION}"
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
    "SELECT event_id, message_id, routing_key, body, event_seq FROM outbox "
    "WHERE outbox.event_id = p.event_id "
    "AND outbox.created_at < now() - make_interval(secs => :older_than_s) LIMIT 1) o "
    f"{_WITH_OPERATION} ORDER BY p.event_id LIMIT :n FOR UPDATE OF p SKIP LOCKED"
)

_UNPUBLISHED_EVENTS_PREPARED = prepared("unpublished_events", _UNPUBLISHED_EVENTS)


def unpublished_events(connection: Connection, message_ids: list[str]) -> list[Event]:
    """The named events still waiting to be published, with their bodies."""
    # Each id once: the statement looks up every id it is given.
    unique_ids = dict.fromkeys(message_ids)
    rows = _UNPUBLISHED_EVENTS_PREPARED.execute(
        connection, {"ids": text_array(unique_ids)}, rows=len(unique_ids)
    )
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


# The feed: numbered events after a number, in their order, and the last
# number given, from one snapshot (one statement). The counter row is there
# even when no event is: a page without events still says where the feed ends.
_FEED_PAGE = text(
    BY_KEY + "SELECT c.last_seq, o.event_seq, o.message_id, o.routing_key, "
    f"{_BODY} FROM event_seq_counter c LEFT JOIN LATERAL ("
    "SELECT event_id, message_id, routing_key, body, event_seq FROM outbox "
    "WHERE event_seq > :after ORDER BY event_seq LIMIT :n) o ON true "
    f"{_WITH_OPERATION} ORDER BY o.event_seq"
)


def feed_page(engine: Engine, after: int, limit: int) -> tuple[int, list[FeedEvent]]:
    """The last feed number given, and up to `limit` events numbered after `after`."""
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(_FEED_PAGE, {"after": after, "n": limit}).all()
    events = []
    for row in rows:
        if row.event_seq is not None:
            assert row.body is not None, f"event {row.message_id}: no body and no operation"
            events.append(FeedEvent(row.event_seq, row.message_id, row.routing_key, row.body))
    return rows[0].last_seq, events
