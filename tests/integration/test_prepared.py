"""Small ledger statements run prepared under a plan cached per connection; big ones do not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import text

from billing import limits, service
from billing.adapters.database import make_engine
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.adapters.prepared import prepared
from billing.domain import NewAccount, Operation, OperationType, Status
from billing.ports import TransientError
from tests.support import stack
from tests.support.plans import plan_nodes

# Every statement a lone operation runs prepared, from its acceptance to its event.
PREPARED_ON_THE_PATH = {
    "billing_insert_operations_1",
    "billing_lock_operations_1",
    "billing_take_pending_1",
    "billing_lock_and_get_accounts_1",
    "billing_lock_and_get_accounts_2",
    "billing_write_batch_1",
    "billing_unpublished_events_1",
    "billing_mark_events_published_1",
}


@pytest.fixture
def one_connection() -> Iterator[Any]:
    """A ledger of its own, alice and bob, on a pool that hands out one connection at a time."""
    settings = stack.make_settings()
    stack.prepare_database(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    for account in ("alice", "bob"):
        service.open_account(NewAccount(account, "USD"), SqlUnitOfWork(engine))
    yield engine
    engine.dispose()
    stack.drop_database(settings)


def transfer(operation_id: str, amount: int = 1) -> Operation:
    return Operation(
        operation_id,
        OperationType.transfer,
        {"source_account_id": "alice", "destination_account_id": "bob", "amount": amount},
    )


def credit(operation_id: str, account_id: str = "alice", amount: int = 100) -> Operation:
    return Operation(
        operation_id, OperationType.credit, {"account_id": account_id, "amount": amount}
    )


def run_to_its_event(engine: Any, operation: Operation) -> service.Applied:
    """Accept, apply, then read and mark its event, as the API and a worker would."""
    service.accept_operations([operation], SqlUnitOfWork(engine))
    (applied,) = service.apply_operations([operation.operation_id], SqlUnitOfWork(engine))
    uow = SqlUnitOfWork(engine)
    with uow:
        events = uow.outbox.unpublished_events([operation.operation_id])
        assert [e.message_id for e in events] == [operation.operation_id]
        uow.outbox.mark_events_published(events)
        uow.commit()
    return applied


def prepared_statements(engine: Any) -> dict[str, tuple[int, int]]:
    """The names prepared on the pool's connection: (generic plans, custom plans) made."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
        ).all()
    return {name: (generic, custom) for name, generic, custom in rows}


class Sent:
    """The statements the engine sends, as they are sent."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> Sent:
        sqlalchemy_event.listen(self.engine, "before_cursor_execute", self._keep)
        return self

    def __exit__(self, *_: object) -> None:
        sqlalchemy_event.remove(self.engine, "before_cursor_execute", self._keep)

    def _keep(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.statements.append((statement, parameters))

    def starting(self, prefix: str) -> list[str]:
        return [s for s, _ in self.statements if s.startswith(prefix)]


def test_a_lone_operation_prepares_its_statements_once_and_runs_their_cached_plans(
    one_connection: Any,
) -> None:
    engine = one_connection
    service.accept_operations([credit("c1")], SqlUnitOfWork(engine))
    service.apply_operations(["c1"], SqlUnitOfWork(engine))
    with Sent(engine) as first:
        applied = run_to_its_event(engine, transfer("t1", 30))
    assert applied.record is not None and applied.record.operation.status is Status.succeeded
    assert applied.record.balances == {
        "alice": {"posted": 70, "held": 0, "available": 70},
        "bob": {"posted": 30, "held": 0, "available": 30},
    }
    assert set(prepared_statements(engine)) >= PREPARED_ON_THE_PATH
    # Every ledger statement of the path went as EXECUTE, none as its own text.
    assert not first.starting("WITH moved AS"), "the batch's write was planned anew"
    assert not first.starting("INSERT INTO operations")

    before = prepared_statements(engine)
    with Sent(engine) as second:
        run_to_its_event(engine, transfer("t2", 20))
    after = prepared_statements(engine)
    assert second.starting("PREPARE") == []
    for name in PREPARED_ON_THE_PATH:
        generic_before, _ = before[name]
        generic_after, custom_after = after[name]
        # The cached plan, made once without the parameters, ran again; never
        # a plan made for a call's parameters.
        assert generic_after > generic_before, name
        assert custom_after == 0, name
    with engine.connect() as connection:
        balances = dict(connection.execute(text("SELECT account_id, posted FROM accounts")).all())
    assert balances["alice"] == 50 and balances["bob"] == 50


def test_a_batch_bigger_than_the_limit_is_planned_for_its_size(one_connection: Any) -> None:
    engine = one_connection
    size = limits.prepared_rows_max + 1
    batch = [credit(f"big-{n}", amount=n) for n in range(1, size + 1)]
    with Sent(engine) as sent:
        service.accept_operations(batch, SqlUnitOfWork(engine))
        applied = service.apply_operations([o.operation_id for o in batch], SqlUnitOfWork(engine))
    assert [a.record.operation.status for a in applied if a.record] == [Status.succeeded] * size
    assert len(sent.starting("INSERT INTO operations")) == 1
    assert len(sent.starting("WITH moved AS")) == 1
    assert not [s for s, _ in sent.statements if "EXECUTE billing_" in s]
    assert prepared_statements(engine) == {}


def test_a_connection_whose_statements_are_gone_is_replaced_and_the_retry_applies_once(
    one_connection: Any,
) -> None:
    engine = one_connection
    service.accept_operations([credit("c1")], SqlUnitOfWork(engine))
    service.apply_operations(["c1"], SqlUnitOfWork(engine))
    service.accept_operations([transfer("t1", 10)], SqlUnitOfWork(engine))
    # Something else on the connection drops them (DISCARD ALL, a pooler's reset).
    with engine.connect() as connection:
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.commit()
    with pytest.raises(TransientError, match="prepared statements out of step"):
        service.apply_operations(["t1"], SqlUnitOfWork(engine))
    # The task's retry: a new connection, prepared anew.
    (applied,) = service.apply_operations(["t1"], SqlUnitOfWork(engine))
    assert applied.newly_applied and applied.record is not None
    (again,) = service.apply_operations(["t1"], SqlUnitOfWork(engine))
    assert not again.newly_applied
    with engine.connect() as connection:
        posted = connection.execute(
            text("SELECT posted FROM accounts WHERE account_id = 'bob'")
        ).scalar()
    assert posted == 10


def test_the_plans_made_once_look_rows_up_by_key_on_a_big_ledger(one_connection: Any) -> None:
    """A generic plan is made without the parameters' values: on a ledger of many
    accounts and operations it still reads by key, never a whole table."""
    engine = one_connection
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO accounts (account_id, currency, posted) "
                "SELECT 'many-' || n, 'USD', 1000 FROM generate_series(1, 20000) AS n"
            )
        )
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, status, request, completed_at, "
                "ledger_seq) SELECT 'old-' || n, 'credit', 'succeeded', "
                "jsonb_build_object('account_id', 'many-' || n, 'amount', 1), now(), -n "
                "FROM generate_series(1, 20000) AS n"
            )
        )
        connection.execute(
            text(
                "INSERT INTO outbox (message_id, routing_key, event_seq) "
                "SELECT 'old-' || n, 'operation.credit.succeeded', -n "
                "FROM generate_series(1, 20000) AS n"
            )
        )
        # Some left for the relay.
        connection.execute(
            text("INSERT INTO outbox_pending (event_id) SELECT event_id FROM outbox LIMIT 2000")
        )
        connection.execute(text("ANALYZE"))
    with Sent(engine) as sent:
        run_to_its_event(engine, credit("c2", "many-7", 5))
        service.accept_operations([credit("c3")], SqlUnitOfWork(engine))
    executes = [
        (part, parameters)
        for statement, parameters in sent.statements
        for part in statement.split("; ")
        if part.startswith("EXECUTE billing_")
    ]
    names = {part.split("(")[0].removeprefix("EXECUTE ") for part, _ in executes}
    assert names >= PREPARED_ON_THE_PATH
    big_tables = {"accounts", "operations", "entries", "outbox", "outbox_pending"}
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # The plans the calls made and cached, whatever this session's settings.
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for part, parameters in executes:
            cursor.execute("EXPLAIN (FORMAT JSON) " + part, parameters)
            plan = cursor.fetchone()[0][0]["Plan"]
            scanned = [
                node["Relation Name"]
                for node in plan_nodes(plan)
                if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in big_tables
            ]
            assert scanned == [], (part, json.dumps(plan)[:2000])
        raw.rollback()
    finally:
        raw.close()


def test_statements_are_prepared_by_their_parameters_names() -> None:
    statement = prepared(
        "example",
        text(
            "SET LOCAL jit = off; SELECT CAST(:a AS int) + CAST(:b AS int), CAST(:a AS int); "
            "SELECT '\\:not_a_parameter', CAST('1' AS int)::text"
        ),
        prefix="SET LOCAL jit = off; ",
    )
    assert statement.prepares == (
        "PREPARE billing_example_1 AS SELECT CAST($1 AS int) + CAST($2 AS int), CAST($1 AS int)",
        "PREPARE billing_example_2 AS SELECT ':not_a_parameter', CAST('1' AS int)::text",
    )
    assert statement.execute_sql.endswith(
        "SET LOCAL jit = off; EXECUTE billing_example_1(%(a)s, %(b)s); EXECUTE billing_example_2"
    )
