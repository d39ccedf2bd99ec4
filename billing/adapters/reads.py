"""The ledger's searches: operations by account, type, status and time; accounts; balances at
a moment. Each is a range of an index (migrations 0008, 0012), read from its start or a cursor.

Operations come newest first, by `accepted_at` then `operation_id` (unique),
and a cursor is the last one's pair: a page is `(accepted_at, operation_id)
< cursor` in that order. Without an account, a page is the union of two
branches, each cut to the page: the completed operations (the indexes by
time and by type hold only those, and failed ones have their own) and the
pending ones (`operations_pending_by_age`); a status filter reads only its
branch. An account's operations are the union of what
names it in the request (`operation_accounts`, written beside every new
operation, read in the page's order, so a page reads at most a page of it),
the operations on its holds (`hold_id` of a
capture, release or expiry: the account's holds, then their operations), and
operations of any other type that made entries on it (a reversal names only
the operation it reverses). The
union is ordered and cut to the page after its branches, each already cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from billing import pages
from billing.adapters.database import translated_errors
from billing.adapters.ledger_db import record_from_row
from billing.adapters.views import account_view
from billing.ports import OperationRecord

_OTHER_TYPES = "type NOT IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release', 'expiry')"
_ORDER = "ORDER BY accepted_at DESC, operation_id DESC"
_COMPLETED = "status <> 'pending'"
_PENDING = "status = 'pending'"


@dataclass(frozen=True)
class OperationFilter:
    account_id: str | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, str] | None = None


def _conditions(
    found: OperationFilter, table: str, keyed: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The filter's conditions on an operations table named `table`, and their parameters;
    those on the time and the cursor on `keyed` instead, a table that has them too."""
    keyed = keyed or table
    where: list[str] = []
    params: dict[str, Any] = {}
    if found.type is not None:
        where.append(f"{table}.type = :type")
        params["type"] = found.type
    if found.status is not None:
        where.append(f"{table}.status = :status")
        params["status"] = found.status
    if found.since is not None:
        where.append(f"{keyed}.accepted_at >= :since")
        params["since"] = found.since
    if found.until is not None:
        where.append(f"{keyed}.accepted_at < :until")
        params["until"] = found.until
    if found.after is not None:
        where.append(f"({keyed}.accepted_at, {keyed}.operation_id) < (:after_at, :after_id)")
        params["after_at"], params["after_id"] = found.after
    return where, params


def _by_status_query(found: OperationFilter) -> tuple[str, dict[str, Any]]:
    """Operations without an account: a page of each status branch the filter allows (each
    condition is the predicate of that branch's indexes, migration 0012), then the page."""
    where, params = _conditions(found, "operations")
    if found.status is None:
        statuses = [_COMPLETED, _PENDING]
    else:
        statuses = [_PENDING if found.status == "pending" else _COMPLETED]
    branches = [
        f"SELECT * FROM operations WHERE {' AND '.join([status, *where])} {_ORDER} LIMIT :n"
        for status in statuses
    ]
    if len(branches) == 1:
        return branches[0], params
    union = " UNION ALL ".join(f"({branch})" for branch in branches)
    return f"{union} {_ORDER} LIMIT :n", params


def _operations_query(found: OperationFilter) -> tuple[str, dict[str, Any]]:
    if found.account_id is None:
        return _by_status_query(found)
    on_hold, params = _conditions(found, "o")
    params["account_id"] = found.account_id
    named, _ = _conditions(found, "o", keyed="a")
    branches = [
        # What names the account in its request (migration 0008's operation_accounts).
        "SELECT a.operation_id, a.accepted_at FROM operation_accounts a "
        "JOIN operations o ON o.operation_id = a.operation_id WHERE a.account_id = :account_id"
        + "".join(f" AND {c}" for c in named)
        + " ORDER BY a.accepted_at DESC, a.operation_id DESC LIMIT :n",
        # A capture, release or expiry names only its hold: the account's holds, then the
        # operations on each (OFFSET 0 keeps the subquery a loop over the holds: as a
        # join, PostgreSQL walked every operation newest first and looked its hold up,
        # 1.3 s on a ledger of 1,000,000).
        "SELECT o.operation_id, o.accepted_at FROM ("
        "SELECT hold_id FROM holds WHERE account_id = :account_id UNION "
        "SELECT hold_id FROM holds WHERE destination_account_id = :account_id) h "
        "CROSS JOIN LATERAL (SELECT operation_id, accepted_at FROM operations o "
        "WHERE o.request->>'hold_id' = h.hold_id"
        + "".join(f" AND {c}" for c in on_hold)
        + " OFFSET 0) o ORDER BY o.accepted_at DESC, o.operation_id DESC LIMIT :n",
        # Any other type (a reversal names only what it reverses): by its entries here,
        # a loop over them for the same reason.
        "SELECT o.operation_id, o.accepted_at FROM (SELECT DISTINCT operation_id FROM entries "
        f"WHERE account_id = :account_id AND {_OTHER_TYPES}) e "
        "CROSS JOIN LATERAL (SELECT operation_id, accepted_at FROM operations o "
        "WHERE o.operation_id = e.operation_id"
        + "".join(f" AND {c}" for c in on_hold)
        + " OFFSET 0) o ORDER BY o.accepted_at DESC, o.operation_id DESC LIMIT :n",
    ]
    union = " UNION ".join(f"({branch})" for branch in branches)
    query = (
        f"SELECT operations.* FROM ({union}) AS page "
        "JOIN operations USING (operation_id) "
        f"ORDER BY operations.accepted_at DESC, operations.operation_id DESC LIMIT :n"
    )
    return query, params


# A page reads a few hundred rows by key, but PostgreSQL misjudges how many
# operations a hold has (a `jsonb` expression: 5,000 instead of one or two)
# and how many entries of other types an account has (none, until such a type
# exists), so it compiled the statement with JIT (560 ms of a 2 ms query) and
# started parallel workers to read an empty index (40 ms).
_AS_A_SMALL_READ = "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; "


def list_operations(
    engine: Engine, found: OperationFilter, limit: int
) -> tuple[list[OperationRecord], str | None]:
    """A page of the operations the filter finds, newest first, and the next page's cursor."""
    query, params = _operations_query(found)
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(text(_AS_A_SMALL_READ + query), {**params, "n": limit + 1}).all()
    records = [record_from_row(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = records[-1]
        next_cursor = pages.operations_cursor(last.accepted_at, last.operation.operation_id)
    return records, next_cursor


def list_accounts(
    engine: Engine, currency: str | None, limit: int, after_account_id: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the client accounts (never the external ones) by account_id, and the cursor."""
    where = ["NOT is_external"]
    params: dict[str, Any] = {"n": limit + 1}
    if currency is not None:
        where.append("currency = :currency")
        params["currency"] = currency
    if after_account_id is not None:
        where.append("account_id > :after")
        params["after"] = after_account_id
    query = f"SELECT * FROM accounts WHERE {' AND '.join(where)} ORDER BY account_id LIMIT :n"
    with translated_errors(), engine.connect() as connection:
        rows = connection.execute(text(query), params).all()
    items = [account_view(row._mapping) for row in rows[:limit]]
    next_cursor = items[-1]["account_id"] if len(rows) > limit else None
    return items, next_cursor


# The account's figures after its last entry at or before the moment. An
# account's transactions follow each other under its lock, and each takes
# the later of its clock and the account's newest entry time
# (`batch.ledger_time`), so along an account's entries `created_at` never
# goes back: the entries at or before a moment are
# the first ones of its history, and the last of them carries the figures.
_BALANCES_AT = text(
    "SELECT a.account_id, e.posted_after, e.held_after FROM accounts a "
    "LEFT JOIN LATERAL (SELECT posted_after, held_after FROM entries "
    "WHERE entries.account_id = a.account_id AND entries.created_at <= :at "
    "ORDER BY created_at DESC, entry_id DESC LIMIT 1) e ON true "
    "WHERE a.account_id = :account_id AND NOT a.is_external"
)


def balances_at(engine: Engine, account_id: str, at: datetime) -> dict[str, Any] | None:
    """The account's posted, held and available after every entry at or before `at`.

    Zeros before its first entry (an account opens empty), also before it
    was created; None when there is no such client account.
    """
    with translated_errors(), engine.connect() as connection:
        row = connection.execute(_BALANCES_AT, {"account_id": account_id, "at": at}).first()
    if row is None:
        return None
    posted, held = row.posted_after or 0, row.held_after or 0
    return {
        "account_id": account_id,
        "posted": posted,
        "held": held,
        "available": posted - held,
        "at": at.isoformat(timespec="microseconds"),
    }
