"""A ledger transaction's statements stay lookups by key, whatever the statistics say."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import text

from billing import service
from billing.adapters import ledger_db
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import Operation, OperationType
from tests.support.plans import plan_nodes


def credits(prefix: str, count: int) -> list[Operation]:
    return [
        Operation(f"{prefix}{i}", OperationType.credit, {"account_id": "alice", "amount": 1})
        for i in range(count)
    ]


def test_completing_a_batch_never_compares_every_pending_operation_with_every_one_of_it(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    done = credits("done-", 300)
    service.accept_operations(done, SqlUnitOfWork(engine))
    service.apply_operations([o.operation_id for o in done], SqlUnitOfWork(engine))
    # Statistics taken while nothing is pending (autovacuum on a quiet ledger,
    # the benchmark's VACUUM ANALYZE), then a backlog builds.
    with engine.connect() as connection:
        connection.execute(text("ANALYZE operations"))
        connection.commit()
    backlog = credits("backlog-", 3_000)
    service.accept_operations(backlog, SqlUnitOfWork(engine))

    written: list[tuple[str, Any]] = []

    def keep_the_write(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "UPDATE operations" in statement:
            written.append((statement, parameters))

    sqlalchemy_event.listen(engine, "before_cursor_execute", keep_the_write)
    try:
        service.apply_operations([o.operation_id for o in backlog[:500]], SqlUnitOfWork(engine))
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", keep_the_write)
    assert len(written) == 1
    statement, parameters = written[0]

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0][0]["Plan"]
    finally:
        raw.close()
    nodes = list(plan_nodes(plan))
    # Read through the pending condition, the whole table is scanned for a row
    # the statistics promise, then joined (at worst compared pair by pair)
    # with the 500: what the statement did before.
    through_pending = [
        node
        for node in nodes
        if node.get("Relation Name") == "operations" and "completed_at" in node.get("Filter", "")
    ]
    assert through_pending == [], through_pending
    assert not [
        node
        for node in nodes
        if node["Node Type"] == "Nested Loop" and "operation_id" in node.get("Join Filter", "")
    ]
    (update,) = [n for n in nodes if n.get("Relation Name") == "operations" and "Operation" in n]
    assert update["Plan Rows"] >= 100  # the 500 it completes, not the 1 the statistics promised


def test_a_ledger_transaction_looks_its_accounts_up_by_key_however_many_the_ledger_holds(
    workerless_engine: Any,
) -> None:
    engine = workerless_engine
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO accounts (account_id, currency) "
                "SELECT 'many-' || n, 'USD' FROM generate_series(1, 20000) AS n"
            )
        )
        connection.execute(text("ANALYZE accounts"))
    batch = [
        Operation(f"c{n}", OperationType.credit, {"account_id": f"many-{n * 37}", "amount": 1})
        for n in range(1, 501)
    ]
    service.accept_operations(batch, SqlUnitOfWork(engine))

    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "UPDATE accounts" in statement or "FROM accounts WHERE" in statement:
            seen.append((statement, parameters))

    sqlalchemy_event.listen(engine, "before_cursor_execute", keep)
    try:
        applied = service.apply_operations([o.operation_id for o in batch], SqlUnitOfWork(engine))
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", keep)
    assert [a.record.operation.status.value for a in applied if a.record] == ["succeeded"] * 500
    assert len(seen) == 2
    # The settings come first, in the message that takes the locks and reads the accounts.
    locks_and_read = seen[0][0]
    assert locks_and_read.startswith(ledger_db.PLAN_BY_KEY)
    # The read is the last statement of that message.
    seen[0] = (locks_and_read.split("; ")[-1], seen[0][1])

    def accounts_read(statement: str, parameters: Any, settings: str) -> list[str]:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            if settings:
                cursor.execute(settings)
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = cursor.fetchone()[0][0]["Plan"]
            raw.rollback()
        finally:
            raw.close()
        nodes = list(plan_nodes(plan))
        assert any(node.get("Relation Name") == "accounts" for node in nodes)
        return [
            node["Node Type"]
            for node in nodes
            if node.get("Relation Name") == "accounts" or "Join" in node["Node Type"]
        ]

    for statement, parameters in seen:
        # What PostgreSQL chooses on its own with these statistics: the whole table.
        assert "Seq Scan" in accounts_read(statement, parameters, ""), statement
        read = accounts_read(statement, parameters, ledger_db.PLAN_BY_KEY)
        assert "Seq Scan" not in read and "Hash Join" not in read, (statement, read)
