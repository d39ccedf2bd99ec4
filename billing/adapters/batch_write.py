"""Writing what a ledger batch did: one statement, one round trip, while the account locks are held.

The balances, entries, completed operations and outbox rows of a batch used
to be four statements, each a round trip between the worker and PostgreSQL
on a machine whose two cores every process shares. The account locks are
held throughout, and every other ledger transaction of a busy ledger waits
for them, so the writes go in one statement of data-modifying CTEs: they
touch different tables and see the same snapshot, which is all they need.

The completed operations are matched by primary key alone. They are
pending: the ledger transaction locked their rows (`FOR UPDATE`) and read
them pending before deciding them, so nothing else completes them
meanwhile. A pending condition beside the key only misled the planner: as
`status = 'pending'` it matched the partial index of pending operations,
and PostgreSQL, expecting few, read every pending operation through it and
hashed them (27 of the statement's 56 ms, with 18,500 pending); as
`completed_at IS NULL`, statistics taken while nothing was pending (the
benchmark's VACUUM ANALYZE between scenarios, or autovacuum's on a quiet
ledger) promised one row, and PostgreSQL scanned the whole table for the
pending operations and compared each with every one of the 500 (a nested
loop: 1.8 to 3.3 s a statement with 19,000 pending, while every other
ledger transaction waited on the account locks).

The events take their feed numbers here, from the one row of
`event_seq_counter`: its row lock, held until this transaction commits,
makes the next ledger transaction number after this one is visible, so
numbers become visible in their order, without gaps (a transaction that
rolls back gives its numbers back). The counter is updated as the events
are inserted, after the balances, entries and operations, so its lock is
held only from there to the commit (the holds and reversals the batch
saved are written in between: `service._write`); `adapters.event_feed`
says why no other numbering keeps that promise.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from billing.adapters import jsoncodec
from billing.adapters.pgarrays import int_array, text_array, timestamp_array
from billing.adapters.prepared import prepared
from billing.domain import Entry
from billing.ports import Event, OperationRecord

WRITE_BATCH = text(
    "WITH moved AS ("
    "UPDATE accounts SET posted = accounts.posted + d.posted, held = accounts.held + d.held, "
    "last_entry_at = CAST(:created_at AS timestamptz) "
    "FROM unnest(CAST(:move_ids AS varchar[]), CAST(:move_posted AS bigint[]), "
    "CAST(:move_held AS bigint[])) AS d(account_id, posted, held) "
    "WHERE accounts.account_id = d.account_id AND NOT accounts.is_external "
    "RETURNING accounts.account_id, accounts.posted, accounts.held), "
    "entered AS ("
    "INSERT INTO entries (operation_id, account_id, type, bucket, amount, posted_after, "
    "held_after, created_at) "
    "SELECT o, a, t, b, m, p, h, CAST(:created_at AS timestamptz) FROM unnest("
    "CAST(:entry_operation_ids AS varchar[]), CAST(:entry_account_ids AS varchar[]), "
    "CAST(:entry_types AS varchar[]), CAST(:entry_buckets AS varchar[]), "
    "CAST(:entry_amounts AS bigint[]), CAST(:entry_posted_after AS bigint[]), "
    "CAST(:entry_held_after AS bigint[])) AS e(o, a, t, b, m, p, h)), "
    "completed AS ("
    "UPDATE operations SET status = d.status, error_code = d.code, "
    "error_message = d.message, balances = d.balances, completed_at = d.at, ledger_seq = d.seq "
    "FROM unnest(CAST(:operation_ids AS varchar[]), CAST(:statuses AS varchar[]), "
    "CAST(:codes AS varchar[]), CAST(:messages AS text[]), CAST(:balances AS jsonb[]), "
    "CAST(:completed_ats AS timestamptz[]), CAST(:seqs AS bigint[])) "
    "AS d(operation_id, status, code, message, balances, at, seq) "
    "WHERE operations.operation_id = d.operation_id "
    "RETURNING 1), "
    "numbered AS ("
    "UPDATE event_seq_counter SET last_seq = last_seq + CAST(:event_count AS bigint) "
    "WHERE singleton = true AND CAST(:event_count AS bigint) > 0 "
    "RETURNING last_seq - CAST(:event_count AS bigint) AS base), "
    "added AS ("
    "INSERT INTO outbox (message_id, routing_key, body, event_seq) "
    "SELECT e.i, e.k, e.b, numbered.base + e.n FROM numbered, "
    "unnest(CAST(:event_ids AS varchar[]), CAST(:event_keys AS varchar[]), "
    "CAST(:event_bodies AS json[])) WITH ORDINALITY AS e(i, k, b, n) RETURNING event_id), "
    "marked AS (INSERT INTO outbox_pending (event_id) SELECT event_id FROM added) "
    "SELECT (SELECT count(*) FROM completed) AS completed, "
    "array_agg(account_id) AS account_ids, array_agg(posted) AS posted, array_agg(held) AS held "
    "FROM moved"
)

_WRITE_BATCH_PREPARED = prepared("write_batch", WRITE_BATCH)


def write_batch(
    connection: Connection,
    moves: dict[str, tuple[int, int]],
    entries: list[Entry],
    completed: list[OperationRecord],
    events: list[Event],
    created_at: datetime,
) -> dict[str, tuple[int, int]]:
    """Write the batch; each moved client account's (posted, held) after.

    The external counter-account of a currency is touched by every credit
    and debit, so updating its row would serialize them all; its balance is
    the sum of its entries instead, and it is never moved here.
    """
    result = _WRITE_BATCH_PREPARED.execute(
        connection,
        write_parameters(moves, entries, completed, events, created_at),
        rows=max(len(entries), len(completed)),
    ).one()
    assert result.completed == len(completed), "an operation to complete has no row"
    # One row of arrays, not a row per account: psycopg2 reads arrays in C.
    balances = zip(result.posted or [], result.held or [], strict=True)
    return dict(zip(result.account_ids or [], balances, strict=True))


def write_parameters(
    moves: dict[str, tuple[int, int]],
    entries: list[Entry],
    completed: list[OperationRecord],
    events: list[Event],
    created_at: datetime,
) -> dict[str, object]:
    """The parameters of `WRITE_BATCH`."""
    return {
        "move_ids": text_array(moves),
        "move_posted": int_array(posted for posted, _ in moves.values()),
        "move_held": int_array(held for _, held in moves.values()),
        "created_at": created_at,
        **_entry_arrays(entries),
        **_completed_arrays(completed),
        "event_count": len(events),
        "event_ids": text_array(e.message_id for e in events),
        "event_keys": text_array(e.routing_key for e in events),
        "event_bodies": text_array(
            None if e.body is None else jsoncodec.text_of(e.body) for e in events
        ),
    }


def _entry_arrays(entries: list[Entry]) -> dict[str, str]:
    return {
        "entry_operation_ids": text_array(e.operation_id for e in entries),
        "entry_account_ids": text_array(e.account_id for e in entries),
        "entry_types": text_array(e.type for e in entries),
        "entry_buckets": text_array(e.bucket for e in entries),
        "entry_amounts": int_array(e.amount for e in entries),
        "entry_posted_after": int_array(e.posted_after for e in entries),
        "entry_held_after": int_array(e.held_after for e in entries),
    }


def _completed_arrays(records: list[OperationRecord]) -> dict[str, str]:
    return {
        "operation_ids": text_array(r.operation.operation_id for r in records),
        "statuses": text_array(r.operation.status for r in records),
        "codes": text_array(r.error_code for r in records),
        "messages": text_array(r.error_message for r in records),
        "balances": text_array(_json_or_none(r.balances) for r in records),
        "completed_ats": timestamp_array(r.completed_at for r in records),
        "seqs": int_array(r.ledger_seq for r in records),
    }


def _json_or_none(value: object) -> str | None:
    return jsoncodec.dumps(value) if value is not None else None
