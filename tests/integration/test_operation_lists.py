"""Lists of operations without an account: the completed and the pending ones are read from
indexes of their own (migration 0012) and joined into one newest-first page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from billing import pages, service
from billing.adapters import reads
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.adapters.reads import OperationFilter
from billing.domain import Operation, OperationType
from tests.support.plans import plan_nodes

FILTERS = [
    OperationFilter(),
    OperationFilter(status="pending"),
    OperationFilter(status="succeeded"),
    OperationFilter(status="failed"),
    OperationFilter(type="debit"),
    OperationFilter(type="credit", status="pending"),
]


def every_page(engine: Any, found: OperationFilter, limit: int) -> list[str]:
    """The operation ids of every page, following the cursors to the end."""
    listed: list[str] = []
    while True:
        records, cursor = reads.list_operations(engine, found, limit)
        listed.extend(r.operation.operation_id for r in records)
        if cursor is None:
            return listed
        assert records
        found = OperationFilter(
            type=found.type, status=found.status, after=pages.parse_operations_cursor(cursor)
        )


def newest_first(engine: Any, found: OperationFilter) -> list[str]:
    """What a list must show: the table's rows in the page's order, filtered here."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT operation_id, type, status FROM operations "
                "ORDER BY accepted_at DESC, operation_id DESC"
            )
        ).all()
    return [
        row.operation_id
        for row in rows
        if found.type in (None, row.type) and found.status in (None, row.status)
    ]


def batch(prefix: str, count: int) -> list[Operation]:
    """Credits to alice and debits from bob (who has nothing, so they fail), whose ids sort
    in another order than their places in the batch."""
    operations = []
    for place in range(count):
        operation_id = f"{prefix}-{place * 5 % count:02d}"
        if place % 4 == 3:
            operations.append(
                Operation(operation_id, OperationType.debit, {"account_id": "bob", "amount": 9})
            )
        else:
            operations.append(
                Operation(operation_id, OperationType.credit, {"account_id": "alice", "amount": 1})
            )
    return operations


def test_pages_mixing_pending_and_completed_operations_of_one_moment_keep_the_key_order(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    # Each batch shares one accepted_at. The first is applied; then the ledger stores the
    # outcomes of the second's first places (as its write does: the service would take
    # every pending operation along), whose ids are spread among the others.
    early, middle, late = batch("early", 8), batch("middle", 12), batch("late", 6)
    service.accept_operations(early, SqlUnitOfWork(engine), as_batch=True)
    service.apply_operations([o.operation_id for o in early], SqlUnitOfWork(engine))
    service.accept_operations(middle, SqlUnitOfWork(engine), as_batch=True)
    service.accept_operations(late, SqlUnitOfWork(engine), as_batch=True)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE operations SET completed_at = now(), ledger_seq = nextval('ledger_seq'), "
                "status = CASE type WHEN 'debit' THEN 'failed' ELSE 'succeeded' END, "
                "error_code = CASE type WHEN 'debit' THEN 'insufficient_funds' END "
                "WHERE operation_id = ANY(:ids)"
            ),
            {"ids": [o.operation_id for o in middle[:6]]},
        )
        statuses = connection.execute(
            text(
                "SELECT count(DISTINCT accepted_at), array_agg(DISTINCT status ORDER BY status) "
                "FROM operations WHERE operation_id LIKE 'middle-%'"
            )
        ).one()
    assert tuple(statuses) == (1, ["failed", "pending", "succeeded"])

    for found in FILTERS:
        expected = newest_first(engine, found)
        assert expected, found
        for limit in (1, 2, 3, 5, 7, 100):
            assert every_page(engine, found, limit) == expected, (found, limit)


@pytest.fixture
def ledger_with_a_backlog(workerless_engine: Any) -> Iterator[Any]:
    """20,000 completed operations, counted while nothing was pending, then 3,000 pending
    (a backlog the statistics have not seen)."""
    engine = workerless_engine
    insert = (
        "INSERT INTO operations (operation_id, type, status, request, error_code, ledger_seq, "
        "accepted_at, completed_at) SELECT 'op-' || n, CASE WHEN n % 10 = 0 THEN 'debit' "
        'ELSE \'credit\' END, {status}, \'{{"account_id": "alice", "amount": 1}}\', '
        "{error}, {seq}, now() - (30000 - n) * interval '1 second', {completed} "
        "FROM generate_series({first}, {last}) AS n"
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                insert.format(
                    status="CASE WHEN n % 100 = 7 THEN 'failed' ELSE 'succeeded' END",
                    error="CASE WHEN n % 100 = 7 THEN 'insufficient_funds' END",
                    seq="n",
                    completed="now()",
                    first=1,
                    last=20_000,
                )
            )
        )
        connection.execute(text("ANALYZE operations"))
    with engine.begin() as connection:
        connection.execute(
            text(
                insert.format(
                    status="'pending'", error="NULL", seq="NULL", completed="NULL", first=20_001,
                    last=23_000,
                )
            )
        )  # fmt: skip
    yield engine


@pytest.mark.parametrize("found", FILTERS)
def test_a_list_without_an_account_reads_index_ranges_in_its_order_however_long_the_backlog(
    ledger_with_a_backlog: Any, found: OperationFilter
) -> None:
    engine = ledger_with_a_backlog
    for after in (None, "op-21500", "op-10000"):
        if after is not None:
            with engine.connect() as connection:
                key = connection.execute(
                    text(
                        "SELECT accepted_at, operation_id FROM operations WHERE operation_id = :i"
                    ),
                    {"i": after},
                ).one()
            found = OperationFilter(type=found.type, status=found.status, after=tuple(key))
        query, params = reads._operations_query(found)
        with engine.connect() as connection:
            plan = connection.execute(
                # With the settings the service reads under (`list_operations`).
                text(reads._AS_A_SMALL_READ + "EXPLAIN (ANALYZE, FORMAT JSON) " + query),
                {**params, "n": 101},
            ).scalar_one()[0]["Plan"]
        nodes = list(plan_nodes(plan))
        read = [n for n in nodes if n.get("Relation Name") == "operations"]
        assert read and all(n["Node Type"] == "Index Scan" for n in read), (found, read)
        # Each branch reads at most a page of its index, and nothing is sorted whole.
        assert all(n["Actual Rows"] <= 101 for n in read), (found, read)
        assert not [n for n in nodes if "Sort" in n["Node Type"]], (found, nodes)
