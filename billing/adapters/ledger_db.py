"""The unit of work over PostgreSQL: one transaction, advisory account locks, the ledger tables."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from billing import limits
from billing.adapters import batch_write, event_feed, jsoncodec, metrics, outbox_reads, tables
from billing.adapters.database import translate_error
from billing.adapters.pgarrays import int_array, text_array
from billing.adapters.prepared import prepared
from billing.domain import (
    AccountState,
    Entry,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    OperationType,
    Posting,
    Status,
    external_account_id,
)
from billing.ports import Event, InvalidData, OperationRecord
from billing.reversals import ReversalTarget

# The statements a batch runs take whole arrays as parameters (`= ANY`,
# `unnest`), each sent as one literal (`pgarrays`), so each is one cached
# statement whatever the batch size, instead of SQL built and compiled again
# for every size.
# The columns of an operation's record, in the order `_records` unpacks them.
_RECORD_NAMES = (
    "operation_id",
    "type",
    "status",
    "request",
    "error_code",
    "error_message",
    "balances",
    "accepted_at",
    "completed_at",
    "ledger_seq",
    "batch_id",
    "batch_position",
    "reversed",
    "reversals",
)
_RECORD_COLUMNS = ", ".join(_RECORD_NAMES)
_GET_OPERATIONS = text(
    f"SELECT {_RECORD_COLUMNS} FROM operations WHERE operation_id = ANY(CAST(:ids AS varchar[]))"
)
# Rows are locked in one fixed order (batch, place, id), in one statement, so
# two transactions given overlapping ids never wait for each other in a
# cycle. With `with_earlier`, the pending operations before the given pending
# ones in their batches are locked too, waiting for them like the given ones:
# the transaction applies them first (a batch's order). With LIMIT, the rows
# locked are the first in that order, so an operation locked has every
# pending operation before it in its batch locked as well. An earlier one
# that the transaction it waited for completed is checked again as it is
# now, and left out: it takes no room under the LIMIT.
# Planned by key whatever the backlog: the given rows are read by their ids
# (a status condition in their WHERE let PostgreSQL read every pending
# operation through the index of pending ones instead: 2.5 ms with 20,000
# pending), and each batch's earlier operations by a range of the batch
# index (LATERAL with LIMIT: not hashed against every pending operation,
# 1.5 ms more). When the given pending ones of a batch fill a run of places
# (as many as the run is long: places are unique in a batch), no other
# operation lies between them and the range ends at the run's start: a task
# given a whole batch reads no range at all. Locking 500 ids takes 1.9 ms
# instead of 0.7 (the shortest of 100 runs, before the account locks): the
# given rows read twice, and sorted.
_LOCK_OPERATIONS = text(
    "WITH given AS ("
    "SELECT batch_id, min(batch_position) FILTER (WHERE status = 'pending') AS first, "
    "max(batch_position) FILTER (WHERE status = 'pending') AS last, "
    "count(*) FILTER (WHERE status = 'pending') AS n "
    "FROM operations WHERE operation_id = ANY(CAST(:ids AS varchar[])) "
    "AND batch_id IS NOT NULL AND CAST(:with_earlier AS boolean) GROUP BY batch_id) "
    f"SELECT {_RECORD_COLUMNS} FROM operations WHERE operation_id = ANY("
    "CAST(:ids AS varchar[]) || ARRAY("
    "SELECT earlier.operation_id FROM given, LATERAL ("
    "SELECT e.operation_id FROM operations e WHERE e.status = 'pending' "
    "AND e.batch_id = given.batch_id AND e.batch_position < CASE "
    "WHEN given.n = given.last - given.first + 1 THEN given.first ELSE given.last END "
    "ORDER BY e.batch_position LIMIT :n) AS earlier)) "
    "AND (status = 'pending' OR operation_id = ANY(CAST(:ids AS varchar[]))) "
    "ORDER BY batch_id, batch_position, operation_id LIMIT :n FOR UPDATE"
)
# Never waits: rows another transaction holds are skipped (it is applying them).
# An operation the recovery sweep has sent again is left to its own tasks:
# if something in it breaks every transaction, it breaks only its own.
# Only the operations accepted in the last `take_along_window_s` (see limits).
# A batch's operations share their `accepted_at`: the earlier ones come first.
_TAKE_PENDING_OPERATIONS = text(
    f"SELECT {_RECORD_COLUMNS} FROM operations WHERE status = 'pending' AND resent_at IS NULL "
    "AND accepted_at > now() - make_interval(secs => :window_s) "
    "AND NOT operation_id = ANY(CAST(:excluded AS varchar[])) "
    "ORDER BY accepted_at, batch_id, batch_position LIMIT :n FOR UPDATE SKIP LOCKED"
)
# For each batch, the first pending operation before a place that the
# transaction does not hold: what the batch's later operations wait for. The
# index is read in place order from the batch's start, past the operations
# the transaction holds, up to the first it does not.
_BATCH_FRONTS = text(
    "SELECT b.batch_id, (SELECT min(e.batch_position) FROM operations e "
    "WHERE e.status = 'pending' AND e.batch_id = b.batch_id AND e.batch_position < b.last "
    "AND NOT e.operation_id = ANY(CAST(:held AS varchar[]))) AS front "
    "FROM unnest(CAST(:batch_ids AS bigint[]), CAST(:lasts AS integer[])) AS b(batch_id, last)"
)
# Every statement of a ledger transaction from the account locks on (the
# read below, the batch's write) looks rows up by key, a few hundred of them
# while the locks are held. With statistics of a ledger of 60,000 accounts
# PostgreSQL chose to read the whole accounts table instead, and to hash it
# for the balances' update: 30 to 60 ms a statement where looking up its 500
# accounts took 2 (auto_explain in the benchmark), while every other ledger
# transaction waited for the locks. So the rest of the transaction plans
# without whole-table reads or hash and merge joins wherever a key lookup
# exists.
# The cost that disabling sequential scans puts on a table read without an
# index made PostgreSQL compile a statement (JIT) at 400 ms a time, with
# every lock held: JIT is off too, as it never pays for statements this small.
PLAN_BY_KEY = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
    "SET LOCAL enable_mergejoin = off; SET LOCAL jit = off; "
)
# The locks, then the read and the ledger sequence numbers, in one round
# trip: statements of one message, each with a snapshot of its own, so the
# read sees what the transactions it waited for committed, and the numbers
# follow theirs. Only what a decision needs is read: an account's metadata
# and creation time never are, and decoding them is not free. The numbers
# come last, in a row of their own (no account id), as one array.
_LOCK_AND_GET_ACCOUNTS = text(
    PLAN_BY_KEY + "SELECT count(pg_advisory_xact_lock(k)) "
    "FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n); "
    "SELECT account_id, currency, posted, held, overdraft_limit, is_external, last_entry_at, "
    "CAST(NULL AS bigint[]) AS seqs "
    "FROM accounts WHERE account_id = ANY(CAST(:ids AS varchar[])) "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "(SELECT array_agg(nextval('ledger_seq') ORDER BY n) FROM generate_series(1, :n) AS n)"
)
# A new row is the operation as given, pending, with the time it was
# accepted: only that time (and its place in a batch) comes back. Reading
# every request back too took a quarter of the API's CPU in batches of 500
# (decoding what it had just encoded). Rows are inserted in the order given,
# so of two operations with the same id the first is recorded and the second
# finds it taken. A batch takes one number (the scalar subquery runs once)
# and each operation its place in the list given.
_INSERT_OPERATIONS = text(
    "INSERT INTO operations (operation_id, type, request, batch_id, batch_position) "
    "SELECT i, t, r, CASE WHEN CAST(:as_batch AS boolean) "
    "THEN (SELECT nextval('operation_batch_ids')) END, "
    "CASE WHEN CAST(:as_batch AS boolean) THEN CAST(n AS integer) END "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:types AS varchar[]), "
    "CAST(:requests AS jsonb[])) WITH ORDINALITY AS o(i, t, r, n) "
    "ON CONFLICT DO NOTHING RETURNING operation_id, accepted_at, batch_id, batch_position"
)
# What a reversal needs of the operation it reverses: its posted entries
# (the movement to mirror; only a succeeded one has any, written at its
# `completed_at`: migration 0013's `entries_by_time`) and how much of it
# is reversed already. Read before the account locks (to choose them) and
# again once they are held (every reversal of an operation takes the same
# locks, so that read is the one to decide with).
_REVERSAL_TARGETS = text(
    "SELECT o.operation_id, o.type, o.status, o.reversed, e.account_id, e.amount "
    "FROM operations o LEFT JOIN entries e ON o.status = 'succeeded' "
    "AND e.created_at = o.completed_at AND e.operation_id = o.operation_id "
    "AND e.bucket = 'posted' "
    "WHERE o.operation_id = ANY(CAST(:ids AS varchar[])) ORDER BY o.operation_id, e.entry_id"
)
# The backstop under the rules: a reversed sum never passes what the
# operation moved (its positive posted entries), whatever the caller decided.
_RECORD_REVERSALS = text(
    "UPDATE operations SET reversed = reversed + :amount, "
    "reversals = COALESCE(reversals, CAST('{}' AS varchar[])) || CAST(:ids AS varchar[]) "
    "WHERE operation_id = :target AND status = 'succeeded' AND reversed + :amount <= ("
    "SELECT COALESCE(sum(amount), 0) FROM entries WHERE created_at = operations.completed_at "
    "AND operation_id = :target AND bucket = 'posted' AND amount > 0) RETURNING 1"
)
# A mark lost with a crash only has its events published again, which the
# contract allows (at least once, every copy the same): its commit does not
# wait for the disk. The publisher waited 2 ms for that flush after every
# burst, a task's worth of time at a closed loop's pace.
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off; "
_MARK_EVENTS_PUBLISHED = text(
    _ASYNC_COMMIT + "DELETE FROM outbox_pending WHERE event_id = ANY(CAST(:ids AS bigint[]))"
)
_LOCK_OPERATIONS_PREPARED = prepared("lock_operations", _LOCK_OPERATIONS)
_TAKE_PENDING_PREPARED = prepared("take_pending", _TAKE_PENDING_OPERATIONS)
_LOCK_AND_GET_ACCOUNTS_PREPARED = prepared(
    "lock_and_get_accounts", _LOCK_AND_GET_ACCOUNTS, prefix=PLAN_BY_KEY
)
_INSERT_OPERATIONS_PREPARED = prepared("insert_operations", _INSERT_OPERATIONS)
_MARK_EVENTS_PUBLISHED_PREPARED = prepared(
    "mark_events_published", _MARK_EVENTS_PUBLISHED, prefix=_ASYNC_COMMIT
)


def account_lock_key(account_id: str) -> int:
    """A stable signed 64-bit key for an account's advisory lock.

    A collision between two accounts only makes them share a lock, which
    serializes more than needed but never less.
    """
    digest = hashlib.blake2b(account_id.encode(), digest_size=8, person=b"billing-acct").digest()
    return int.from_bytes(digest, "big", signed=True)


def record_from_row(row: Any) -> OperationRecord:
    """The record of a row holding the operation's columns by name (others may be there too)."""
    columns = row._mapping
    return _records([tuple(columns[name] for name in _RECORD_NAMES)])[0]


_TYPES = {operation_type.value: operation_type for operation_type in OperationType}
_STATUSES = {status.value: status for status in Status}


def _records(rows: Any) -> list[OperationRecord]:
    """Records of rows of `_RECORD_COLUMNS`, in their order.

    Unpacked as tuples, the enums looked up in dicts: a ledger transaction
    reads 500 of them, and reading each column by name and calling the
    enums took three times as long (micro-benchmark in the commit).
    """
    # After the first four columns come OperationRecord's own fields, in its order.
    return [
        OperationRecord(
            Operation(operation_id, _TYPES[operation_type], request, _STATUSES[status]), *rest
        )
        for operation_id, operation_type, status, request, *rest in rows
    ]


def hold_from_row(row: Any) -> HoldState:
    return HoldState(
        hold_id=row.hold_id,
        account_id=row.account_id,
        destination_account_id=row.destination_account_id,
        amount=row.amount,
        captured=row.captured,
        remaining=row.remaining,
        status=HoldStatus(row.status),
        expires_at=row.expires_at,
        created_at=row.created_at,
    )


def _accounts_and_seqs(rows: Any) -> tuple[dict[str, AccountState], list[int]]:
    # Unpacked as tuples: a batch reads a thousand rows while holding the locks.
    accounts = {}
    seqs: list[int] = []
    for account_id, currency, posted, held, overdraft_limit, external, last, numbers in rows:
        if account_id is None:
            seqs = sorted(numbers or [])
        else:
            accounts[account_id] = AccountState(
                account_id, currency, posted, held, overdraft_limit, external, last
            )
    return accounts, seqs


class SqlUnitOfWork:
    """A transaction on one pooled connection; rolled back unless committed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        # When this transaction got its account locks (time.perf_counter), if it has.
        self._locks_taken_at: float | None = None
        self.ledger = SqlLedger(self)
        self.operations = SqlOperations(self)
        self.outbox = SqlOutbox(self)
        self.sweep = SqlSweep(self)

    def __enter__(self) -> SqlUnitOfWork:
        self._locks_taken_at = None
        try:
            self._connection = self._engine.connect()
            self._connection.begin()
        except Exception as error:
            translated = translate_error(error)
            if translated is None:
                raise
            raise translated from error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.rollback()
            except DBAPIError:
                pass  # the connection died; the server rolled the transaction back
            finally:
                connection.close()
                self._locks_released()
        translated = translate_error(exc) if exc is not None else None
        if translated is not None:
            raise translated from exc

    @property
    def connection(self) -> Connection:
        assert self._connection is not None, "use the unit of work inside `with`"
        return self._connection

    def commit(self) -> None:
        self.connection.commit()
        self._locks_released()

    def locks_taken(self) -> None:
        """The account locks are held from now until the transaction ends."""
        if self._locks_taken_at is None:
            self._locks_taken_at = time.perf_counter()

    def _locks_released(self) -> None:
        """The transaction ended (advisory transaction locks end with it): count how long."""
        if self._locks_taken_at is not None:
            metrics.ledger_locks_held.observe(time.perf_counter() - self._locks_taken_at)
            self._locks_taken_at = None


class _OnConnection:
    """One concern of a unit of work, on its transaction's connection."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    @property
    def connection(self) -> Connection:
        return self._uow.connection


class SqlOperations(_OnConnection):
    """The operations' records (`ports.Operations`)."""

    def get_operation(
        self, operation_id: str, *, for_update: bool = False
    ) -> OperationRecord | None:
        query = select(tables.operations).where(tables.operations.c.operation_id == operation_id)
        if for_update:
            query = query.with_for_update()
        row = self.connection.execute(query).first()
        return record_from_row(row) if row else None

    def get_operations(self, operation_ids: list[str]) -> dict[str, OperationRecord]:
        rows = self.connection.execute(_GET_OPERATIONS, {"ids": text_array(operation_ids)})
        return {r.operation.operation_id: r for r in _records(rows)}

    def lock_operations(
        self, operation_ids: list[str], *, with_earlier: bool, limit: int
    ) -> dict[str, OperationRecord]:
        rows = _LOCK_OPERATIONS_PREPARED.execute(
            self.connection,
            {"ids": text_array(operation_ids), "with_earlier": with_earlier, "n": limit},
            rows=len(operation_ids),
        )
        return {r.operation.operation_id: r for r in _records(rows)}

    def take_pending_operations(
        self, excluded_ids: list[str], *, limit: int
    ) -> list[OperationRecord]:
        rows = _TAKE_PENDING_PREPARED.execute(
            self.connection,
            {
                "excluded": text_array(excluded_ids),
                "n": limit,
                "window_s": limits.take_along_window_s,
            },
            # Sized by the ids it is given: its LIMIT only cuts a read of the
            # index of pending operations in its order, whatever the limit.
            rows=len(excluded_ids),
        )
        return _records(rows)

    def batch_fronts(self, lasts: dict[int, int], held_ids: list[str]) -> dict[int, int]:
        rows = self.connection.execute(
            _BATCH_FRONTS,
            {
                "batch_ids": int_array(lasts),
                "lasts": int_array(lasts.values()),
                "held": text_array(held_ids),
            },
        )
        return {batch_id: front for batch_id, front in rows if front is not None}

    def insert_operation(self, operation: Operation) -> tuple[OperationRecord, bool]:
        """Record an accepted operation as pending; the existing one when the id is taken."""
        operations = tables.operations
        row = self.connection.execute(
            pg_insert(operations)
            .values(
                operation_id=operation.operation_id,
                type=operation.type.value,
                request=operation.request,
            )
            .on_conflict_do_nothing()
            .returning(operations)
        ).first()
        if row is not None:
            return record_from_row(row), True
        existing = self.get_operation(operation.operation_id)
        assert existing is not None
        return existing, False

    def insert_operations(
        self, operations: list[Operation], *, as_batch: bool = False
    ) -> tuple[dict[str, OperationRecord], set[str]]:
        """Record many operations as pending; every record, and the ids newly inserted."""
        rows = _INSERT_OPERATIONS_PREPARED.execute(
            self.connection,
            {
                "as_batch": as_batch,
                "ids": text_array(o.operation_id for o in operations),
                "types": text_array(o.type.value for o in operations),
                "requests": text_array(jsoncodec.dumps(o.request) for o in operations),
            },
            rows=len(operations),
        )
        first_given = {o.operation_id: o for o in reversed(operations)}
        records = {
            operation_id: OperationRecord(
                operation=first_given[operation_id],
                error_code=None,
                error_message=None,
                balances=None,
                accepted_at=accepted_at,
                completed_at=None,
                batch_id=batch_id,
                batch_position=batch_position,
            )
            for operation_id, accepted_at, batch_id, batch_position in rows
        }
        created = set(records)
        missing = [o.operation_id for o in operations if o.operation_id not in records]
        if missing:
            records.update(self.get_operations(missing))
        return records, created

    def get_reversal_targets(self, operation_ids: list[str]) -> dict[str, ReversalTarget]:
        rows = self.connection.execute(_REVERSAL_TARGETS, {"ids": text_array(operation_ids)})
        postings: dict[str, list[Posting]] = {}
        found: dict[str, tuple[str, str, int]] = {}
        for operation_id, operation_type, status, reversed_sum, account_id, amount in rows:
            found[operation_id] = (operation_type, status, reversed_sum)
            moves = postings.setdefault(operation_id, [])
            if account_id is not None:
                moves.append(Posting(account_id, amount))
        return {
            operation_id: ReversalTarget(
                operation_id,
                OperationType(operation_type),
                Status(status),
                tuple(postings[operation_id]),
                reversed_sum,
            )
            for operation_id, (operation_type, status, reversed_sum) in found.items()
        }

    def record_reversals(self, reversals: dict[str, list[tuple[str, int]]]) -> None:
        for target_id, made in sorted(reversals.items()):
            amount = sum(amount for _, amount in made)
            updated = self.connection.execute(
                _RECORD_REVERSALS,
                {"target": target_id, "amount": amount, "ids": text_array(i for i, _ in made)},
            ).all()
            if len(updated) != 1:
                raise InvalidData(f"operation {target_id}: reversed beyond its amount")


class SqlLedger(_OnConnection):
    """Accounts, holds, their locks and the batch's write (`ports.Ledger`)."""

    def get_holds(self, hold_ids: list[str], for_update: bool = False) -> dict[str, HoldState]:
        if not hold_ids:
            return {}
        query = select(tables.holds).where(tables.holds.c.hold_id.in_(hold_ids))
        if for_update:
            query = query.order_by(tables.holds.c.hold_id).with_for_update()
        return {row.hold_id: hold_from_row(row) for row in self.connection.execute(query)}

    def get_hold(self, hold_id: str, *, for_update: bool = False) -> HoldState | None:
        query = select(tables.holds).where(tables.holds.c.hold_id == hold_id)
        if for_update:
            query = query.with_for_update()
        row = self.connection.execute(query).first()
        return hold_from_row(row) if row else None

    def save_holds(self, new: list[HoldState], changed: list[HoldState]) -> None:
        holds = tables.holds
        if new:
            self.connection.execute(
                insert(holds),
                [
                    {
                        "hold_id": h.hold_id,
                        "account_id": h.account_id,
                        "destination_account_id": h.destination_account_id,
                        "amount": h.amount,
                        "captured": h.captured,
                        "remaining": h.remaining,
                        "status": h.status.value,
                        "expires_at": h.expires_at,
                        "created_at": h.created_at,
                    }
                    for h in new
                ],
            )
        for hold in changed:
            self.connection.execute(
                update(holds)
                .where(holds.c.hold_id == hold.hold_id)
                .values(captured=hold.captured, remaining=hold.remaining, status=hold.status.value)
            )

    def lock_and_get_accounts(
        self, account_ids: list[str], *, ledger_seqs: int
    ) -> tuple[dict[str, AccountState], list[int]]:
        keys = sorted({account_lock_key(a) for a in account_ids})
        started = time.perf_counter()
        try:
            rows = _LOCK_AND_GET_ACCOUNTS_PREPARED.execute(
                self.connection,
                {"keys": int_array(keys), "ids": text_array(account_ids), "n": ledger_seqs},
                rows=max(len(account_ids), ledger_seqs),
            )
            taken = _accounts_and_seqs(rows)
        finally:
            # A wait that ran into `lock_wait_ms` is counted too: it is the one to see.
            metrics.ledger_lock_wait.observe(time.perf_counter() - started)
        self._uow.locks_taken()
        return taken

    def write_batch(
        self,
        moves: dict[str, tuple[int, int]],
        entries: list[Entry],
        completed: list[OperationRecord],
        events: list[Event],
        created_at: datetime,
    ) -> dict[str, tuple[int, int]]:
        return batch_write.write_batch(
            self.connection, moves, entries, completed, events, created_at
        )

    def create_account(self, account: NewAccount) -> tuple[dict[str, Any], bool]:
        """Insert the account (and its currency's external account); True when new."""
        accounts = tables.accounts
        self.connection.execute(
            pg_insert(accounts)
            .values(
                account_id=external_account_id(account.currency),
                currency=account.currency,
                is_external=True,
            )
            .on_conflict_do_nothing()
        )
        row = self.connection.execute(
            pg_insert(accounts)
            .values(
                account_id=account.account_id,
                currency=account.currency,
                overdraft_limit=account.overdraft_limit,
                metadata=account.metadata,
            )
            .on_conflict_do_nothing()
            .returning(accounts)
        ).first()
        if row is not None:
            return dict(row._mapping), True
        row = self.connection.execute(
            select(accounts).where(accounts.c.account_id == account.account_id)
        ).one()
        return dict(row._mapping), False


class SqlOutbox(_OnConnection):
    """The events waiting to be published (`ports.Outbox`)."""

    def unpublished_events(self, message_ids: list[str]) -> list[Event]:
        return outbox_reads.unpublished_events(self.connection, message_ids)

    def claim_unpublished_events(self, *, older_than_s: float, limit: int) -> list[Event]:
        return outbox_reads.claim_unpublished_events(self.connection, older_than_s, limit)

    def mark_events_published(self, events: list[Event]) -> None:
        event_ids = [e.event_id for e in events]
        assert None not in event_ids, "only events read back from the outbox can be marked"
        _MARK_EVENTS_PUBLISHED_PREPARED.execute(
            self.connection, {"ids": int_array(event_ids)}, rows=len(event_ids)
        )

    def prune_events(self, *, retention_days: int, limit: int) -> int:
        return event_feed.prune_events(self.connection, retention_days, limit)


class SqlSweep(_OnConnection):
    """What the periodic jobs look for (`ports.Sweep`)."""

    def mark_pending_resent(self, *, older_than_s: float, limit: int) -> list[tuple[str, int]]:
        operations = tables.operations
        last_sent = func.coalesce(operations.c.resent_at, operations.c.accepted_at)
        stuck = (
            select(operations.c.operation_id)
            .where(
                operations.c.status == "pending",
                last_sent < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
            )
            .order_by(operations.c.accepted_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = self.connection.execute(
            update(operations)
            .where(operations.c.operation_id.in_(stuck))
            .values(resent_at=func.now(), resends=operations.c.resends + 1)
            .returning(operations.c.operation_id, operations.c.resends)
        )
        return [(row.operation_id, row.resends) for row in rows]

    def due_hold_ids(self, *, limit: int) -> list[str]:
        holds = tables.holds
        rows = self.connection.execute(
            select(holds.c.hold_id)
            .where(holds.c.status == "active", holds.c.expires_at <= func.now())
            .order_by(holds.c.expires_at)
            .limit(limit)
        )
        return [row.hold_id for row in rows]
