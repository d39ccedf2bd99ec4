"""The unit of work over PostgreSQL: one transaction, advisory account locks, the ledger tables."""

from __future__ import annotations

import hashlib
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from billing.adapters import jsoncodec, tables
from billing.adapters.database import translate_error
from billing.batch import Entry
from billing.domain import (
    AccountState,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    OperationType,
    Status,
    external_account_id,
)
from billing.ports import Event, OperationRecord

# The statements a batch runs take whole arrays as parameters (`= ANY`,
# `unnest`), so each is one cached statement whatever the batch size, instead
# of SQL built and compiled again for every size.
_LOCK_STATEMENT = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(:keys) WITH ORDINALITY AS t(k, n)"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))
_GET_OPERATIONS = text("SELECT * FROM operations WHERE operation_id = ANY(:ids)")
# Rows are locked in id order, so two transactions given overlapping ids
# never wait for each other in a cycle.
_LOCK_OPERATIONS = text(
    "SELECT * FROM operations WHERE operation_id = ANY(:ids) ORDER BY operation_id FOR UPDATE"
)
# Never waits: rows another transaction holds are skipped (it is applying them).
# An operation the recovery sweep has sent again is left to its own tasks:
# if something in it breaks every transaction, it breaks only its own.
_TAKE_PENDING_OPERATIONS = text(
    "SELECT * FROM operations WHERE status = 'pending' AND resent_at IS NULL "
    "AND NOT operation_id = ANY(:excluded) "
    "ORDER BY accepted_at LIMIT :n FOR UPDATE SKIP LOCKED"
)
# Only what a decision needs: an account's metadata and creation time are
# never read while applying, and decoding them for every locked row is not free.
_GET_ACCOUNTS = text(
    "SELECT account_id, currency, posted, held, overdraft_limit, is_external "
    "FROM accounts WHERE account_id = ANY(:ids)"
)
_NEXT_LEDGER_SEQS = text("SELECT nextval('ledger_seq') AS seq FROM generate_series(1, :n)")
_INSERT_OPERATIONS = text(
    "INSERT INTO operations (operation_id, type, request) "
    "SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:types AS varchar[]), "
    "CAST(:requests AS jsonb[])) "
    "ON CONFLICT DO NOTHING RETURNING *"
)
_MOVE_BALANCES = text(
    "UPDATE accounts SET posted = accounts.posted + d.posted, held = accounts.held + d.held "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:posted AS bigint[]), CAST(:held AS bigint[])) "
    "AS d(account_id, posted, held) "
    "WHERE accounts.account_id = d.account_id AND NOT accounts.is_external "
    "RETURNING accounts.account_id, accounts.posted, accounts.held"
)
_INSERT_ENTRIES = text(
    "INSERT INTO entries (operation_id, account_id, type, bucket, amount, posted_after, "
    "held_after, created_at) "
    "SELECT o, a, t, b, m, p, h, CAST(:created_at AS timestamptz) FROM unnest("
    "CAST(:operation_ids AS varchar[]), CAST(:account_ids AS varchar[]), "
    "CAST(:types AS varchar[]), CAST(:buckets AS varchar[]), CAST(:amounts AS bigint[]), "
    "CAST(:posted_after AS bigint[]), CAST(:held_after AS bigint[])) AS e(o, a, t, b, m, p, h)"
)
_COMPLETE_OPERATIONS = text(
    "UPDATE operations SET status = d.status, error_code = d.code, "
    "error_message = d.message, balances = d.balances, completed_at = d.at, ledger_seq = d.seq "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:statuses AS varchar[]), "
    "CAST(:codes AS varchar[]), CAST(:messages AS text[]), CAST(:balances AS jsonb[]), "
    "CAST(:ats AS timestamptz[]), CAST(:seqs AS bigint[])) "
    "AS d(operation_id, status, code, message, balances, at, seq) "
    "WHERE operations.operation_id = d.operation_id AND operations.status = 'pending'"
)
# The outbox row and its pending mark in one statement.
_ADD_EVENTS = text(
    "WITH added AS (INSERT INTO outbox (message_id, routing_key, body) "
    "SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:keys AS varchar[]), "
    "CAST(:bodies AS json[])) RETURNING event_id) "
    "INSERT INTO outbox_pending (event_id) SELECT event_id FROM added"
)
_UNPUBLISHED_EVENTS = text(
    "SELECT o.event_id, o.message_id, o.routing_key, CAST(o.body AS text) AS body "
    "FROM outbox o JOIN outbox_pending p ON p.event_id = o.event_id "
    "WHERE o.message_id = ANY(:ids)"
)
# Never waits: events another relay holds are skipped (it is publishing them).
_CLAIM_UNPUBLISHED_EVENTS = text(
    "SELECT o.event_id, o.message_id, o.routing_key, CAST(o.body AS text) AS body "
    "FROM outbox_pending p JOIN outbox o ON o.event_id = p.event_id "
    "WHERE o.created_at < now() - make_interval(secs => :older_than_s) "
    "ORDER BY p.event_id LIMIT :n FOR UPDATE OF p SKIP LOCKED"
)
_MARK_EVENTS_PUBLISHED = text(
    "DELETE FROM outbox_pending WHERE event_id = ANY(CAST(:ids AS bigint[]))"
)


def account_lock_key(account_id: str) -> int:
    """A stable signed 64-bit key for an account's advisory lock.

    A collision between two accounts only makes them share a lock, which
    serializes more than needed but never less.
    """
    digest = hashlib.blake2b(account_id.encode(), digest_size=8, person=b"billing-acct").digest()
    return int.from_bytes(digest, "big", signed=True)


def record_from_row(row: Any) -> OperationRecord:
    return OperationRecord(
        operation=Operation(
            operation_id=row.operation_id,
            type=OperationType(row.type),
            request=row.request,
            status=Status(row.status),
        ),
        error_code=row.error_code,
        error_message=row.error_message,
        balances=row.balances,
        accepted_at=row.accepted_at,
        completed_at=row.completed_at,
        ledger_seq=row.ledger_seq,
    )


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


def _json_or_none(value: Any) -> str | None:
    return jsoncodec.dumps(value) if value is not None else None


def account_from_row(row: Any) -> AccountState:
    return AccountState(
        account_id=row.account_id,
        currency=row.currency,
        posted=row.posted,
        held=row.held,
        overdraft_limit=row.overdraft_limit,
        is_external=row.is_external,
    )


class SqlUnitOfWork:
    """A transaction on one pooled connection; rolled back unless committed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __enter__(self) -> SqlUnitOfWork:
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
        translated = translate_error(exc) if exc is not None else None
        if translated is not None:
            raise translated from exc

    @property
    def connection(self) -> Connection:
        assert self._connection is not None, "use the unit of work inside `with`"
        return self._connection

    def commit(self) -> None:
        self.connection.commit()

    def lock_accounts(self, account_ids: list[str]) -> None:
        keys = sorted({account_lock_key(a) for a in account_ids})
        self.connection.execute(_LOCK_STATEMENT, {"keys": keys})

    def get_operation(
        self, operation_id: str, *, for_update: bool = False
    ) -> OperationRecord | None:
        query = select(tables.operations).where(tables.operations.c.operation_id == operation_id)
        if for_update:
            query = query.with_for_update()
        row = self.connection.execute(query).first()
        return record_from_row(row) if row else None

    def get_operations(self, operation_ids: list[str]) -> dict[str, OperationRecord]:
        rows = self.connection.execute(_GET_OPERATIONS, {"ids": operation_ids})
        return {row.operation_id: record_from_row(row) for row in rows}

    def lock_operations(self, operation_ids: list[str]) -> dict[str, OperationRecord]:
        rows = self.connection.execute(_LOCK_OPERATIONS, {"ids": operation_ids})
        return {row.operation_id: record_from_row(row) for row in rows}

    def take_pending_operations(
        self, excluded_ids: list[str], *, limit: int
    ) -> list[OperationRecord]:
        rows = self.connection.execute(
            _TAKE_PENDING_OPERATIONS, {"excluded": excluded_ids, "n": limit}
        )
        return [record_from_row(row) for row in rows]

    def get_holds(self, hold_ids: list[str], for_update: bool = False) -> dict[str, HoldState]:
        if not hold_ids:
            return {}
        query = select(tables.holds).where(tables.holds.c.hold_id.in_(hold_ids))
        if for_update:
            query = query.order_by(tables.holds.c.hold_id).with_for_update()
        return {row.hold_id: hold_from_row(row) for row in self.connection.execute(query)}

    def next_ledger_seqs(self, count: int) -> list[int]:
        rows = self.connection.execute(_NEXT_LEDGER_SEQS, {"n": count})
        return sorted(int(row.seq) for row in rows)

    def move_balances(self, moves: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Move client balances by (posted, held) in one statement; each one's (posted, held) after.

        The external counter-account of a currency is touched by every credit
        and debit, so updating its row would serialize them all; its balance is
        the sum of its entries instead, and it never appears here.
        """
        if not moves:
            return {}
        rows = self.connection.execute(
            _MOVE_BALANCES,
            {
                "ids": list(moves),
                "posted": [posted for posted, _ in moves.values()],
                "held": [held for _, held in moves.values()],
            },
        )
        return {account_id: (posted, held) for account_id, posted, held in rows}

    def insert_entries(self, entries: list[Entry], created_at: datetime) -> None:
        if entries:
            self.connection.execute(
                _INSERT_ENTRIES,
                {
                    "operation_ids": [e.operation_id for e in entries],
                    "account_ids": [e.account_id for e in entries],
                    "types": [e.type for e in entries],
                    "buckets": [e.bucket for e in entries],
                    "amounts": [e.amount for e in entries],
                    "posted_after": [e.posted_after for e in entries],
                    "held_after": [e.held_after for e in entries],
                    "created_at": created_at,
                },
            )

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

    def complete_operations(self, records: list[OperationRecord]) -> None:
        """Store the terminal status and outcome of each operation, in one statement."""
        if not records:
            return
        done = self.connection.execute(
            _COMPLETE_OPERATIONS,
            {
                "ids": [r.operation.operation_id for r in records],
                "statuses": [r.operation.status.value for r in records],
                "codes": [r.error_code for r in records],
                "messages": [r.error_message for r in records],
                "balances": [_json_or_none(r.balances) for r in records],
                "ats": [r.completed_at for r in records],
                "seqs": [r.ledger_seq for r in records],
            },
        )
        assert done.rowcount == len(records), "an operation completed twice"

    def add_events(self, events: list[Event]) -> None:
        if events:
            self.connection.execute(
                _ADD_EVENTS,
                {
                    "ids": [e.message_id for e in events],
                    "keys": [e.routing_key for e in events],
                    "bodies": [jsoncodec.text_of(e.body) for e in events],
                },
            )

    def get_accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        rows = self.connection.execute(_GET_ACCOUNTS, {"ids": account_ids})
        return {row.account_id: account_from_row(row) for row in rows}

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
        self, operations: list[Operation]
    ) -> tuple[dict[str, OperationRecord], set[str]]:
        """Record many operations as pending; every record, and the ids newly inserted."""
        rows = self.connection.execute(
            _INSERT_OPERATIONS,
            {
                "ids": [o.operation_id for o in operations],
                "types": [o.type.value for o in operations],
                "requests": [jsoncodec.dumps(o.request) for o in operations],
            },
        )
        records = {row.operation_id: record_from_row(row) for row in rows}
        created = set(records)
        missing = [o.operation_id for o in operations if o.operation_id not in records]
        if missing:
            records.update(self.get_operations(missing))
        return records, created

    def unpublished_events(self, message_ids: list[str]) -> list[Event]:
        rows = self.connection.execute(_UNPUBLISHED_EVENTS, {"ids": message_ids})
        return [Event(r.message_id, r.routing_key, r.body, r.event_id) for r in rows]

    def claim_unpublished_events(self, *, older_than_s: float, limit: int) -> list[Event]:
        rows = self.connection.execute(
            _CLAIM_UNPUBLISHED_EVENTS, {"older_than_s": older_than_s, "n": limit}
        )
        return [Event(r.message_id, r.routing_key, r.body, r.event_id) for r in rows]

    def mark_events_published(self, events: list[Event]) -> None:
        event_ids = [e.event_id for e in events]
        assert None not in event_ids, "only events read back from the outbox can be marked"
        self.connection.execute(_MARK_EVENTS_PUBLISHED, {"ids": event_ids})

    def pending_operations(self, *, older_than_s: float, limit: int) -> list[str]:
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
            .values(resent_at=func.now())
            .returning(operations.c.operation_id)
        )
        return [row.operation_id for row in rows]

    def get_hold(self, hold_id: str, *, for_update: bool = False) -> HoldState | None:
        query = select(tables.holds).where(tables.holds.c.hold_id == hold_id)
        if for_update:
            query = query.with_for_update()
        row = self.connection.execute(query).first()
        return hold_from_row(row) if row else None

    def due_hold_ids(self, *, limit: int) -> list[str]:
        holds = tables.holds
        rows = self.connection.execute(
            select(holds.c.hold_id)
            .where(holds.c.status == "active", holds.c.expires_at <= func.now())
            .order_by(holds.c.expires_at)
            .limit(limit)
        )
        return [row.hold_id for row in rows]
