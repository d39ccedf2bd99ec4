"""An account's entries, newest first, page by page: each page a range of
`entries_by_account_time` from its cursor, never a sort of the account's whole history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from billing.adapters import views
from tests.support.plans import plan_nodes

ALICE_ENTRIES = 2_000
# Alice and bob are two of a hundred accounts writing in turn.
ACCOUNTS = 100


@pytest.fixture
def ledger_of_entries(workerless_engine: Any) -> Iterator[Any]:
    """Alice's entries among those of 98 other accounts, bob's too; an account's later
    transactions write later entries at later or equal times (several entries of a
    transaction share its time)."""
    engine = workerless_engine
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO entries (operation_id, account_id, type, amount, posted_after, "
                "created_at) SELECT 'op-' || (n / 2), CASE n % :accounts WHEN 0 THEN 'alice' "
                "WHEN 1 THEN 'bob' ELSE 'other-' || n % :accounts END, 'credit', 1, n, "
                "TIMESTAMPTZ '2026-12-01 00:00:00+00' + (n / 2) * interval '1 millisecond' "
                "FROM generate_series(1, :n) AS n"
            ),
            {"n": ALICE_ENTRIES * ACCOUNTS, "accounts": ACCOUNTS},
        )
        connection.execute(text("ANALYZE entries"))
    yield engine


def entry_ids(engine: Any, account_id: str, below: int | None = None) -> list[int]:
    """The account's entry ids, newest first (below `below` when given)."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT entry_id FROM entries WHERE account_id = :a "
                    "AND entry_id < COALESCE(:below, 9223372036854775807) ORDER BY entry_id DESC"
                ),
                {"a": account_id, "below": below},
            ).scalars()
        )


def every_page(engine: Any, account_id: str, limit: int, cursor: int | None = None) -> list[int]:
    listed: list[int] = []
    while True:
        items, next_cursor = views.list_entries(engine, account_id, limit, cursor)
        listed.extend(item["entry_id"] for item in items)
        if next_cursor is None:
            return listed
        assert len(items) == limit
        cursor = int(next_cursor)


def test_every_page_from_any_position_lists_the_accounts_entries_newest_first(
    ledger_of_entries: Any,
) -> None:
    engine = ledger_of_entries
    alice, bob = entry_ids(engine, "alice"), entry_ids(engine, "bob")
    assert len(alice) == ALICE_ENTRIES
    for limit in (1, 7, 100, 500):
        assert every_page(engine, "alice", limit) == alice, limit
    # A cursor is a position: alice's own entry (as every next_cursor is), one of bob's,
    # a number no entry has, and the ends.
    for cursor in (alice[500], bob[1_000], bob[-1], 0, 1, 10**18):
        assert every_page(engine, "alice", 100, cursor) == entry_ids(engine, "alice", cursor)
    assert every_page(engine, "nobody", 100) == []


def test_a_page_reads_a_page_of_the_accounts_index_and_sorts_nothing(
    ledger_of_entries: Any,
) -> None:
    engine = ledger_of_entries
    for position in ("first", "alice", "bob"):
        query, params = views._ENTRIES_PAGE, {"account_id": "alice", "n": 101}
        if position != "first":
            query = views._ENTRIES_PAGE_AFTER
            params["before"] = entry_ids(engine, position)[ALICE_ENTRIES // 4]
        with engine.connect() as connection:
            plan = connection.execute(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + query.text), params
            ).scalar_one()[0]["Plan"]
        nodes = list(plan_nodes(plan))
        read = [n for n in nodes if n.get("Relation Name") == "entries" and n["Actual Loops"]]
        assert read and all(n["Node Type"] == "Index Scan" for n in read), (position, read)
        # The cursor's entry by its id, then a page of alice's entries from there: from that
        # entry when it is alice's, else from her newest (the other branch reads nothing).
        by_account = [
            n["Actual Rows"] for n in read if n["Index Name"] == "entries_by_account_time"
        ]
        assert sum(by_account) == 101, (position, read)
        assert not [n for n in nodes if "Sort" in n["Node Type"]], (position, nodes)
