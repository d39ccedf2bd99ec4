"""The unit of work over PostgreSQL: one transaction, advisory account locks, the ledger tables."""

from __future__ import annotations

import hashlib
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from billing.adapters import tables
from billing.adapters.database import translate_error
from billing.domain import (
    AccountState,
    Bucket,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    OperationType,
    Posting,
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

    def get_accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        rows = self.connection.execute(
            select(tables.accounts).where(tables.accounts.c.account_id.in_(account_ids))
        )
        return {row.account_id: account_from_row(row) for row in rows}

    def post(self, operation: Operation, postings: list[Posting]) -> dict[str, AccountState]:
        deltas: dict[str, list[int]] = {}
        for posting in postings:
            delta = deltas.setdefault(posting.account_id, [0, 0])
            delta[0 if posting.bucket is Bucket.posted else 1] += posting.amount
        after = self._move_balances(deltas)
        self.connection.execute(
            insert(tables.entries),
            [
                {
                    "operation_id": operation.operation_id,
                    "account_id": p.account_id,
                    "type": operation.type.value,
                    "bucket": p.bucket.value,
                    "amount": p.amount,
                    "posted_after": after[p.account_id].posted if p.account_id in after else None,
                    "held_after": after[p.account_id].held if p.account_id in after else None,
                }
                for p in postings
            ],
        )
        return after

    def _move_balances(self, deltas: dict[str, list[int]]) -> dict[str, AccountState]:
        """Move client balances in one statement; external accounts keep no stored balance.

        The external counter-account of a currency is touched by every credit
        and debit, so updating its row would serialize them all; its balance is
        the sum of its entries instead.
        """
        values = ", ".join(
            f"(:a{i}, CAST(:p{i} AS bigint), CAST(:h{i} AS bigint))" for i in range(len(deltas))
        )
        params: dict[str, Any] = {}
        for i, (account_id, (posted, held)) in enumerate(deltas.items()):
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

    def complete_operation(
        self,
        operation_id: str,
        *,
        status: str,
        error: tuple[str, str] | None,
        balances: dict[str, dict[str, int]] | None,
        completed_at: datetime,
    ) -> int:
        seq = self.connection.execute(
            update(tables.operations)
            .where(tables.operations.c.operation_id == operation_id)
            .values(
                status=status,
                error_code=error[0] if error else None,
                error_message=error[1] if error else None,
                balances=balances,
                completed_at=completed_at,
                ledger_seq=tables.ledger_seq.next_value(),
            )
            .returning(tables.operations.c.ledger_seq)
        ).scalar_one()
        return int(seq)

    def add_event(self, event: Event) -> None:
        self.connection.execute(
            insert(tables.outbox).values(
                message_id=event.message_id, routing_key=event.routing_key, body=event.body
            )
        )

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

    def save_hold(self, hold: HoldState, *, new: bool) -> None:
        holds = tables.holds
        values = {
            "captured": hold.captured,
            "remaining": hold.remaining,
            "status": hold.status.value,
        }
        if new:
            self.connection.execute(
                insert(holds).values(
                    hold_id=hold.hold_id,
                    account_id=hold.account_id,
                    destination_account_id=hold.destination_account_id,
                    amount=hold.amount,
                    expires_at=hold.expires_at,
                    created_at=hold.created_at,
                    **values,
                )
            )
        else:
            self.connection.execute(
                update(holds).where(holds.c.hold_id == hold.hold_id).values(**values)
            )

    def due_hold_ids(self, *, limit: int) -> list[str]:
        holds = tables.holds
        rows = self.connection.execute(
            select(holds.c.hold_id)
            .where(holds.c.status == "active", holds.c.expires_at <= func.now())
            .order_by(holds.c.expires_at)
            .limit(limit)
        )
        return [row.hold_id for row in rows]
