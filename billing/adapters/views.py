"""Read-side queries for the API: accounts, their entries, operations.

Reads need no lock and no unit of work; they go straight to the tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, text

from billing.adapters import tables
from billing.adapters.database import translated_errors
from billing.adapters.ledger_db import hold_from_row, record_from_row
from billing.domain import HoldState
from billing.ports import OperationRecord


def account_view(row: Any) -> dict[str, Any]:
    return {
        "account_id": row["account_id"],
        "currency": row["currency"],
        "posted": row["posted"],
        "held": row["held"],
        "available": row["posted"] - row["held"],
        "overdraft_limit": row["overdraft_limit"],
        "metadata": row["metadata"],
        "created_at": row["created_at"].isoformat(timespec="microseconds"),
    }


def get_account(engine: Engine, account_id: str) -> dict[str, Any] | None:
    accounts = tables.accounts
    with translated_errors(), engine.connect() as connection:
        row = connection.execute(
            select(accounts).where(
                accounts.c.account_id == account_id, accounts.c.is_external.is_(False)
            )
        ).first()
    return account_view(row._mapping) if row else None


# An account's entries newest first are a range of `entries_by_account_time`
# (account, created_at, entry_id): an account's transactions follow one
# another under its lock, each at a time no earlier than the account's
# newest entry (`batch.ledger_time`), so along an account's entries
# `created_at` and `entry_id` grow together, and this order is the order of
# entry ids (the cursor). Ordered by `entry_id` alone, PostgreSQL read and sorted every
# entry of the account for each page (44 ms for 41,539 entries): no index is
# keyed by account and entry id since migration 0012.
# The cursor is an entry id: a position, not necessarily an entry of the
# account. When it is one (every `next_cursor` is), the page starts at that
# entry's place in the index; any other number reads the account's entries
# from the newest, skipping those at or after it (the one-time filter runs
# only one of the two branches).
_ENTRIES_PAGE = text(
    "SELECT * FROM entries WHERE account_id = :account_id "
    "ORDER BY created_at DESC, entry_id DESC LIMIT :n"
)
_ENTRIES_PAGE_AFTER = text(
    "WITH here AS (SELECT created_at FROM entries "
    "WHERE entry_id = :before AND account_id = :account_id) "
    "(SELECT * FROM entries WHERE account_id = :account_id "
    "AND (created_at, entry_id) < ((SELECT created_at FROM here), :before) "
    "ORDER BY created_at DESC, entry_id DESC LIMIT :n) "
    "UNION ALL "
    "(SELECT * FROM entries WHERE account_id = :account_id AND entry_id < :before "
    "AND NOT EXISTS (SELECT FROM here) ORDER BY created_at DESC, entry_id DESC LIMIT :n)"
)


def list_entries(
    engine: Engine, account_id: str, limit: int, before_entry_id: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the account's entries, newest first, and the cursor of the next page."""
    params: dict[str, Any] = {"account_id": account_id, "n": limit + 1}
    query = _ENTRIES_PAGE
    if before_entry_id is not None:
        query, params["before"] = _ENTRIES_PAGE_AFTER, before_entry_id
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(query, params).all()
    items = [
        {
            "entry_id": row.entry_id,
            "operation_id": row.operation_id,
            "type": row.type,
            "bucket": row.bucket,
            "amount": row.amount,
            "posted_after": row.posted_after,
            "held_after": row.held_after,
            "created_at": row.created_at.isoformat(timespec="microseconds"),
        }
        for row in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1].entry_id) if len(rows) > limit else None
    return items, next_cursor


def get_operation(engine: Engine, operation_id: str) -> OperationRecord | None:
    operations = tables.operations
    with translated_errors(), engine.connect() as connection:
        row = connection.execute(
            select(operations).where(operations.c.operation_id == operation_id)
        ).first()
    return record_from_row(row) if row else None


def list_holds(
    engine: Engine, account_id: str, status: str | None, limit: int, before_seq: int | None
) -> tuple[list[HoldState], str | None]:
    """A page of the account's holds, newest first, and the cursor of the next page."""
    holds = tables.holds
    query = select(holds).where(holds.c.account_id == account_id)
    if status is not None:
        query = query.where(holds.c.status == status)
    if before_seq is not None:
        query = query.where(holds.c.hold_seq < before_seq)
    query = query.order_by(holds.c.hold_seq.desc()).limit(limit + 1)
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(query).all()
    next_cursor = str(rows[limit - 1].hold_seq) if len(rows) > limit else None
    return [hold_from_row(row) for row in rows[:limit]], next_cursor
