"""The unit of work over PostgreSQL: one transaction, advisory account locks, the ledger tables."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from billing.adapters import tables
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

_LOCK_STATEMENT = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(:keys) WITH ORDINALITY AS t(k, n)"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


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

    def get_operations(
        self, operation_ids: list[str], for_update: bool = False
    ) -> dict[str, OperationRecord]:
        query = select(tables.operations).where(tables.operations.c.operation_id.in_(operation_ids))
        if for_update:
            query = query.order_by(tables.operations.c.operation_id).with_for_update()
        return {row.operation_id: record_from_row(row) for row in self.connection.execute(query)}

    def get_holds(self, hold_ids: list[str], for_update: bool = False) -> dict[str, HoldState]:
        if not hold_ids:
            return {}
        query = select(tables.holds).where(tables.holds.c.hold_id.in_(hold_ids))
        if for_update:
            query = query.order_by(tables.holds.c.hold_id).with_for_update()
        return {row.hold_id: hold_from_row(row) for row in self.connection.execute(query)}

    def next_ledger_seqs(self, count: int) -> list[int]:
        rows = self.connection.execute(
            text("SELECT nextval('ledger_seq') AS seq FROM generate_series(1, :n)"), {"n": count}
        )
        return sorted(int(row.seq) for row in rows)

    def move_balances(self, moves: dict[str, tuple[int, int]]) -> dict[str, AccountState]:
        """Move client balances by (posted, held) in one statement; the accounts after.

        The external counter-account of a currency is touched by every credit
        and debit, so updating its row would serialize them all; its balance is
        the sum of its entries instead, and it never appears here.
        """
        if not moves:
            return {}
        values = ", ".join(
            f"(:a{i}, CAST(:p{i} AS bigint), CAST(:h{i} AS bigint))" for i in range(len(moves))
        )
        params: dict[str, Any] = {}
        for i, (account_id, (posted, held)) in enumerate(moves.items()):
            params.update({f"a{i}": account_id, f"p{i}": posted, f"h{i}": held})
        rows = self.connection.execute(
            text(
                "UPDATE accounts SET posted = accounts.posted + d.posted, "
                "held = accounts.held + d.held "
                f"FROM (VALUES {values}) AS d(account_id, posted, held) "
                "WHERE accounts.account_id = d.account_id AND NOT accounts.is_external "
                "RETURNING accounts.*"
            ),
            params,
        )
        return {row.account_id: account_from_row(row) for row in rows}

    def insert_entries(self, entries: list[Entry], created_at: datetime) -> None:
        if entries:
            self.connection.execute(
                insert(tables.entries),
                [{**entry.__dict__, "created_at": created_at} for entry in entries],
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
        values = ", ".join(
            f"(:o{i}, :s{i}, :c{i}, :m{i}, CAST(:b{i} AS jsonb), CAST(:t{i} AS timestamptz), "
            f"CAST(:q{i} AS bigint))"
            for i in range(len(records))
        )
        params: dict[str, Any] = {}
        for i, record in enumerate(records):
            params.update(
                {
                    f"o{i}": record.operation.operation_id,
                    f"s{i}": record.operation.status.value,
                    f"c{i}": record.error_code,
                    f"m{i}": record.error_message,
                    f"b{i}": json.dumps(record.balances) if record.balances is not None else None,
                    f"t{i}": record.completed_at,
                    f"q{i}": record.ledger_seq,
                }
            )
        done = self.connection.execute(
            text(
                "UPDATE operations SET status = d.status, error_code = d.code, "
                "error_message = d.message, balances = d.balances, completed_at = d.at, "
                "ledger_seq = d.seq "
                f"FROM (VALUES {values}) AS d(operation_id, status, code, message, balances, at, "
                "seq) WHERE operations.operation_id = d.operation_id AND operations.status = "
                "'pending'"
            ),
            params,
        )
        assert done.rowcount == len(records), "an operation completed twice"

    def add_events(self, events: list[Event]) -> None:
        if events:
            self.connection.execute(
                insert(tables.outbox),
                [
                    {"message_id": e.message_id, "routing_key": e.routing_key, "body": e.body}
                    for e in events
                ],
            )

    def get_accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        rows = self.connection.execute(
            select(tables.accounts).where(tables.accounts.c.account_id.in_(account_ids))
        )
        return {row.account_id: account_from_row(row) for row in rows}

    def unpublished_event_ids(self, message_ids: list[str]) -> list[str]:
        rows = self.connection.execute(
            select(tables.outbox.c.message_id).where(
                tables.outbox.c.message_id.in_(message_ids),
                tables.outbox.c.published_at.is_(None),
            )
        )
        return [row.message_id for row in rows]

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
        table = tables.operations
        rows = self.connection.execute(
            pg_insert(table)
            .values(
                [
                    {"operation_id": o.operation_id, "type": o.type.value, "request": o.request}
                    for o in operations
                ]
            )
            .on_conflict_do_nothing()
            .returning(table)
        )
        records = {row.operation_id: record_from_row(row) for row in rows}
        created = set(records)
        missing = [o.operation_id for o in operations if o.operation_id not in records]
        if missing:
            records.update(self.get_operations(missing))
        return records, created

    def claim_unpublished_events(
        self, message_ids: list[str] | None, *, older_than_s: float, limit: int
    ) -> list[Event]:
        outbox = tables.outbox
        query = select(outbox.c.message_id, outbox.c.routing_key, outbox.c.body).where(
            outbox.c.published_at.is_(None)
        )
        if message_ids is not None:
            query = query.where(outbox.c.message_id.in_(message_ids))
        if older_than_s > 0:
            query = query.where(
                outbox.c.created_at
                < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s)
            )
        query = query.order_by(outbox.c.event_id).limit(limit).with_for_update(skip_locked=True)
        return [Event(r.message_id, r.routing_key, r.body) for r in self.connection.execute(query)]

    def mark_events_published(self, message_ids: list[str]) -> None:
        outbox = tables.outbox
        self.connection.execute(
            update(outbox)
            .where(outbox.c.message_id.in_(message_ids))
            .values(published_at=func.now())
        )

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
