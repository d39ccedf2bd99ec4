"""The event feed's numbers, and pruning.

A feed reader asks for the events after the last number it saw; it must
never find a smaller number appear later. So an event takes its number in
the ledger transaction that records it, from the one row of
`event_seq_counter`, which that transaction updates as its last write
(`batch_write`): the row stays locked until it commits, and the next ledger
transaction waits for it there, so it numbers only once the previous one is
visible. Numbers become visible in their order, and a transaction that
rolls back gives its numbers back: among committed events the numbers have
no gaps, and a reader that meets one knows the events below it were pruned
(`docs/architecture.md`, "The event feed").

A number taken from a sequence would not keep that promise (a transaction
that took 7 may commit after one that took 8 was read). The earlier design
kept it with a numbering transaction of its own after each ledger commit:
one more transaction, lock and flush to the disk per task. The price of
this one: ledger transactions commit one after another, each holding the
counter for the flush of its commit (about 0.1 ms on this machine's disk;
docs/architecture.md, "The event feed").
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from billing.adapters.database import translated_errors

# The outbox is read by key: without fresh statistics (autovacuum off or
# behind) PostgreSQL may otherwise read the whole outbox to join 500 rows
# (as `ledger_db.PLAN_BY_KEY`, for this transaction only). The cost that
# disabling sequential scans puts on a table read without an index can make
# PostgreSQL compile the statement (JIT), 400 ms each time: it is off too.
BY_KEY = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
    "SET LOCAL enable_mergejoin = off; SET LOCAL jit = off; "
)
# The oldest events in feed order, as long as each is past the retention
# and published (an event waiting to be published is never pruned, nor any
# after it): the feed loses only a prefix of its numbers.
_PRUNE = text(
    "WITH head AS (SELECT o.event_id, o.event_seq, "
    "o.created_at < now() - make_interval(days => :retention_days) AND NOT EXISTS ("
    "SELECT 1 FROM outbox_pending p WHERE p.event_id = o.event_id) AS prunable "
    "FROM outbox o ORDER BY o.event_seq LIMIT :n), "
    "stop AS (SELECT min(event_seq) AS event_seq FROM head WHERE NOT prunable) "
    "DELETE FROM outbox USING head WHERE outbox.event_id = head.event_id AND head.prunable "
    "AND head.event_seq < COALESCE((SELECT event_seq FROM stop), 9223372036854775807)"
)


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
