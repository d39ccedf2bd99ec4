"""`billing audit` on a database of its own: passes on a sound ledger, finds each corruption."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from bench.command import audit as bench_audit
from billing import service
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.config import Settings
from billing.domain import NewAccount, Operation, OperationType
from billing.ports import Event
from tests.support import stack


@pytest.fixture
def ledger() -> Iterator[tuple[Settings, Any]]:
    """A fresh database with a little history applied through the service layer."""
    settings = stack.make_settings()
    stack.prepare_database(settings)
    engine = stack.engine_for(settings)
    for account in ("alice", "bob"):
        service.open_account(NewAccount(account, "USD"), SqlUnitOfWork(engine))
    steps = [
        ("c1", OperationType.credit, {"account_id": "alice", "amount": 1000}),
        (
            "t1",
            OperationType.transfer,
            {"source_account_id": "alice", "destination_account_id": "bob", "amount": 300},
        ),
        ("d1", OperationType.debit, {"account_id": "bob", "amount": 301}),
        ("h1", OperationType.hold, {"account_id": "alice", "amount": 200}),
        ("k1", OperationType.capture, {"hold_id": "h1", "amount": 50, "final": False}),
    ]
    for operation_id, kind, request in steps:
        service.accept_operation(Operation(operation_id, kind, request), SqlUnitOfWork(engine))
        service.apply_operation(operation_id, SqlUnitOfWork(engine))
    # Published (to nowhere) but the last: numbered in the feed, or waiting.
    published = [operation_id for operation_id, _, _ in steps[:-1]]
    service.publish_events(published, SqlUnitOfWork(engine), DiscardingPublisher())
    yield settings, engine
    engine.dispose()
    stack.drop_database(settings)


class DiscardingPublisher:
    def publish(self, events: list[Event]) -> None:
        pass


def audit(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit"],
        env=stack.environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def corrupt(engine: Any, statement: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement))


def test_audit_passes_on_a_ledger_written_by_the_service(ledger: tuple[Settings, Any]) -> None:
    result = audit(ledger[0])
    assert result.returncode == 0, result.stderr
    assert "audit passed" in result.stdout


def test_audit_finds_a_corrupted_balance_row_and_exits_1(ledger: tuple[Settings, Any]) -> None:
    settings, engine = ledger
    corrupt(engine, "UPDATE accounts SET posted = posted + 1 WHERE account_id = 'bob'")
    result = audit(settings)
    assert result.returncode == 1
    assert "posted equals the sum of the account's posted entries" in result.stderr
    assert "'bob'" in result.stderr


@pytest.mark.parametrize(
    ("statement", "invariant"),
    [
        (
            "UPDATE accounts SET held = held + 5 WHERE account_id = 'alice'",
            "held equals the sum of the remaining amounts of the account's active holds",
        ),
        (
            "UPDATE holds SET remaining = remaining + 1000, amount = amount + 1000",
            "held equals the sum of the remaining amounts of the account's active holds",
        ),
        (
            "DELETE FROM entries WHERE operation_id = 'c1' AND account_id LIKE '@%'",
            "for each currency the posted entries of all accounts sum to zero",
        ),
        (
            "DELETE FROM outbox WHERE message_id = 't1'",
            "every terminal operation has its outcome recorded for publishing",
        ),
        (
            "UPDATE outbox SET message_id = 'never-recorded' WHERE message_id = 't1'",
            "every event recorded without a body has its terminal operation",
        ),
        (
            "INSERT INTO outbox_pending (event_id) VALUES (9223372036854775807)",
            "every event waiting to be published has its outbox row",
        ),
        (
            "DELETE FROM entries WHERE operation_id = 't1'",
            "every succeeded operation has its entries",
        ),
        (
            "UPDATE entries SET operation_id = 'never-recorded' WHERE operation_id = 't1'",
            "every entry belongs to a recorded operation",
        ),
        (
            "UPDATE entries SET created_at = created_at - interval '1 millisecond' "
            "WHERE operation_id = 't1'",
            "every entry was written when its operation completed",
        ),
        (
            "UPDATE entries SET created_at = created_at - interval '1 hour' "
            "WHERE operation_id = 't1'",
            "along each client account's entries the ledger's time never goes back",
        ),
        (
            "UPDATE accounts SET last_entry_at = last_entry_at - interval '1 millisecond' "
            "WHERE account_id = 'alice'",
            "each client account records the time of its newest entry",
        ),
        (
            "UPDATE entries SET account_id = 'nobody' WHERE account_id = 'bob'",
            "every entry belongs to an account",
        ),
        (
            "UPDATE operations SET status = 'failed', error_code = 'insufficient_funds' "
            "WHERE operation_id = 'c1'",
            "no failed or pending operation has entries",
        ),
        (
            "ALTER TABLE accounts DROP CONSTRAINT accounts_available_above_floor; "
            "UPDATE accounts SET posted = -5 WHERE account_id = 'bob'",
            "no available below the overdraft floor",
        ),
        (
            "UPDATE operations SET batch_id = 1, batch_position = CASE operation_id "
            "WHEN 't1' THEN 1 ELSE 2 END WHERE operation_id IN ('c1', 't1')",
            "a batch's operations were applied in its order",
        ),
        (
            "DROP INDEX outbox_event_seq; UPDATE outbox SET event_seq = 1 WHERE message_id = 't1'",
            "feed numbers are unique",
        ),
        (
            "UPDATE outbox SET event_seq = event_seq + 100 WHERE message_id = 'h1'",
            "feed numbers have no gaps among committed events",
        ),
        (
            "UPDATE event_seq_counter SET last_seq = last_seq + 1",
            "feed numbers have no gaps among committed events",
        ),
        (
            "UPDATE accounts SET posted = 5 WHERE account_id = '@external:USD'",
            "the external counter-accounts keep no running balance",
        ),
        (
            "UPDATE accounts SET posted = posted + 1000000000000000000 "
            "WHERE account_id = 'alice'; "
            "INSERT INTO entries (operation_id, account_id, type, amount) "
            "VALUES ('c1', 'alice', 'credit', 1000000000000000000)",
            "every client balance within -balance_max..balance_max",
        ),
    ],
    ids=[
        "held",
        "hold-remaining",
        "currency-sum",
        "outbox",
        "bodiless-event",
        "outbox-pending",
        "entries",
        "entry-operation",
        "entry-time",
        "entry-time-back",
        "last-entry-at",
        "entry-account",
        "failed-entries",
        "floor",
        "batch-order",
        "feed-unique",
        "feed-gap",
        "feed-last",
        "external-running-balance",
        "balance-max",
    ],
)
def test_audit_finds_each_kind_of_corruption(
    ledger: tuple[Settings, Any], statement: str, invariant: str
) -> None:
    settings, engine = ledger
    corrupt(engine, statement)
    result = audit(settings)
    assert result.returncode == 1
    assert invariant in result.stderr, result.stderr


def test_the_database_itself_refuses_a_balance_below_the_floor(
    ledger: tuple[Settings, Any],
) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError, match="accounts_available_above_floor"):
        corrupt(ledger[1], "UPDATE accounts SET posted = -1 WHERE account_id = 'bob'")


def test_the_bench_reads_the_audit_as_json_violations_and_all(
    ledger: tuple[Settings, Any],
) -> None:
    settings, engine = ledger
    assert bench_audit(settings.database_url) == {"passed": True, "violations": []}
    corrupt(engine, "UPDATE accounts SET posted = posted + 1 WHERE account_id = 'bob'")
    found = bench_audit(settings.database_url)
    assert found["passed"] is False
    [violation] = found["violations"]
    assert violation["invariant"] == "posted equals the sum of the account's posted entries"
    assert [row["account_id"] for row in violation["rows"]] == ["bob"]


def test_the_bench_fails_its_run_when_the_audit_cannot_reach_the_database() -> None:
    found = bench_audit("postgresql+psycopg2://postgres@127.0.0.1:1/billing")
    assert found["passed"] is False
    assert found["violations"] == []
    assert "OperationalError" in found["error"], found
