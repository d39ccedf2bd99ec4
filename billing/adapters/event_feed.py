"""The event feed's numbers, given after commit in the order they become visible, and pruning.

A feed reader asks for the events after the last number it saw; it must
never find a smaller number appear later. So an event is numbered after the
transaction that recorded it committed, before it is published, by a short
transaction that first takes one advisory lock (held until it commits) and
then counts on one row. The next numbering waits for that lock, so it
starts only once the previous one is visible: numbers become visible in
their order. The row is counted only as far as numbers were given (a
numbering that rolls back gives its numbers back), so among committed events
the numbers have no gaps, and a reader that meets one knows the events
below it were pruned (`docs/architecture.md`, "The event feed").

The lock is of the two-integer kind, a space of its own: no account lock
(one `bigint` key each) can ever share it.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from billing import limits
from billing.adapters.database import translated_errors
from billing.adapters.pgarrays import int_array, text_array

# Every statement here looks rows up by key: without fresh statistics
# (autovacuum off or behind) PostgreSQL may otherwise read the whole outbox
# to join 500 rows (as `ledger_db.PLAN_BY_KEY`, for this transaction only).
# The one-row counter has no index to read it by, and the cost that
# disabling sequential scans puts on reading it made PostgreSQL compile the
# statement (JIT): 400 ms a numbering, while every other one waited.
BY_KEY = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
    "SET LOCAL enable_mergejoin = off; SET LOCAL jit = off; "
)
# pg_advisory_xact_lock(int, int): "ev" and 1.
_FEED_LOCK = (
    BY_KEY + f"SET LOCAL lock_timeout = {limits.event_numbering_lock_wait_ms}; "
    "SELECT pg_advisory_xact_lock(25974, 1); "
)

# Read after the lock is taken: in READ COMMITTED each statement of the
# string sees what committed before it started, so every numbering that
# held the lock before is seen, and nothing is numbered twice. The lookups
# are one row of a unique index each (LATERAL ... LIMIT 1), whether it has
# a number tested outside: inside, PostgreSQL walked every unnumbered event
# of the index on `event_seq` for each one.
_NUMBER_TAIL = (
    "counted AS (UPDATE event_seq_counter SET last_seq = last_seq + (SELECT count(*) FROM todo) "
    "WHERE EXISTS (SELECT 1 FROM todo) "
    "RETURNING last_seq - (SELECT count(*) FROM todo) AS base) "
    "UPDATE outbox SET event_seq = counted.base + todo.n FROM todo, counted "
    "WHERE outbox.event_id = todo.event_id"
)
_NUMBER_BY_MESSAGE_ID = text(
    _FEED_LOCK + "WITH todo AS (SELECT o.event_id, row_number() OVER (ORDER BY o.event_id) AS n "
    "FROM unnest(CAST(:ids AS varchar[])) AS i(message_id) CROSS JOIN LATERAL ("
    "SELECT event_id, event_seq FROM outbox WHERE outbox.message_id = i.message_id LIMIT 1) o "
    "WHERE o.event_seq IS NULL), " + _NUMBER_TAIL
)
_NUMBER_BY_EVENT_ID = text(
    _FEED_LOCK + "WITH todo AS (SELECT o.event_id, row_number() OVER (ORDER BY o.event_id) AS n "
    "FROM unnest(CAST(:ids AS bigint[])) AS i(event_id) CROSS JOIN LATERAL ("
    "SELECT event_id, event_seq FROM outbox WHERE outbox.event_id = i.event_id LIMIT 1) o "
    "WHERE o.event_seq IS NULL), " + _NUMBER_TAIL
)
# The events the relay's claim will take next (the oldest left behind),
# found before the lock is taken, so the lock is never held while the
# pending marks are walked; those among them without a number get theirs.
# Numbered or not: a walk for the unnumbered ones alone would pass every
# numbered event waiting (a backlog of millions while the broker refuses
# events), where this one stops after `n`. Each mark looks up its own row,
# in mark order (as in `outbox_reads`: a plain join walked the whole outbox).
_LEFT_BEHIND = text(
    "SELECT o.event_id FROM outbox_pending p CROSS JOIN LATERAL ("
    "SELECT event_id FROM outbox WHERE outbox.event_id = p.event_id "
    "AND outbox.created_at < now() - make_interval(secs => :older_than_s) LIMIT 1) o "
    "ORDER BY p.event_id LIMIT :n"
)

# The oldest events in feed order, as long as each is past the retention
# and published (an event waiting to be published is never pruned, nor any
# after it): the feed loses only a prefix of its numbers. An event not
# numbered yet is waiting, and has no place in that order yet.
_PRUNE = text(
    "WITH head AS (SELECT o.event_id, o.event_seq, "
    "o.created_at < now() - make_interval(days => :retention_days) AND NOT EXISTS ("
    "SELECT 1 FROM outbox_pending p WHERE p.event_id = o.event_id) AS prunable "
    "FROM outbox o WHERE o.event_seq IS NOT NULL ORDER BY o.event_seq LIMIT :n), "
    "stop AS (SELECT min(event_seq) AS event_seq FROM head WHERE NOT prunable) "
    "DELETE FROM outbox USING head WHERE outbox.event_id = head.event_id AND head.prunable "
    "AND head.event_seq < COALESCE((SELECT event_seq FROM stop), 9223372036854775807)"
)


def number_events(connection: Connection, message_ids: list[str]) -> int:
    """Number the named events that have no number yet; how many were numbered."""
    unique_ids = dict.fromkeys(message_ids)
    return connection.execute(_NUMBER_BY_MESSAGE_ID, {"ids": text_array(unique_ids)}).rowcount


def number_left_behind(connection: Connection, older_than_s: float, limit: int) -> int:
    """Number the oldest events unpublished this long that have no number (their publisher
    died before numbering them); how many."""
    event_ids = connection.execute(
        _LEFT_BEHIND, {"older_than_s": older_than_s, "n": limit}
    ).scalars()
    ids = list(event_ids)
    if not ids:
        return 0
    return connection.execute(_NUMBER_BY_EVENT_ID, {"ids": int_array(ids)}).rowcount


def prune_events(connection: Connection, retention_days: int, limit: int) -> int:
    """Delete up to `limit` of the oldest published events past the retention; how many."""
    result = connection.execute(_PRUNE, {"retention_days": retention_days, "n": limit})
    return result.rowcount


def vacuum_pending_marks(engine: Engine) -> None:
    """VACUUM `outbox_pending`, whose every row is inserted and deleted within seconds.

    Without it (autovacuum off, or behind) each published event leaves a
    dead row and index entry there for good, and every relay run walks
    them. The table holds only the events waiting, so this takes
    milliseconds; it skips the table when another vacuum holds it.
    """
    with (
        translated_errors(),
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
    ):
        connection.execute(text("VACUUM (SKIP_LOCKED) outbox_pending"))
