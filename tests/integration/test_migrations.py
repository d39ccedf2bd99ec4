"""Schema migrations carry a database's rows across, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from billing.adapters.database import ensure_database
from billing.adapters.migrate import alembic_config
from tests.support import stack


@pytest.fixture
def database() -> Iterator[tuple[str, Any]]:
    """An empty database of its own, its URL and an engine on it."""
    settings = stack.make_settings()
    ensure_database(settings.database_url)
    engine = stack.engine_for(settings)
    yield settings.database_url, engine
    engine.dispose()
    stack.drop_database(settings)


def test_events_waiting_to_be_published_stay_waiting_across_the_outbox_change(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox (message_id, routing_key, body, published_at) VALUES "
                "('sent', 'operation.credit.succeeded', '{\"n\": 1}', now()), "
                "('waiting', 'operation.debit.failed', '{\"n\": 2, \"a\": [1]}', NULL)"
            )
        )

    command.upgrade(config, "0003")
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT o.message_id, CAST(o.body AS text) FROM outbox_pending p "
                "JOIN outbox o ON o.event_id = p.event_id"
            )
        ).all()
        kept = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    assert [(m, body.replace(" ", "")) for m, body in waiting] == [("waiting", '{"a":[1],"n":2}')]
    assert kept == 2

    command.downgrade(config, "0002")
    with engine.connect() as connection:
        published = dict(
            connection.execute(
                text("SELECT message_id, published_at IS NOT NULL FROM outbox")
            ).all()
        )
    assert published == {"sent": True, "waiting": False}


def test_entries_lose_their_foreign_keys_and_get_them_back_on_downgrade(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    orphan_entry = text(
        "INSERT INTO entries (operation_id, account_id, type, bucket, amount) "
        "VALUES ('no-such-operation', 'nobody', 'credit', 'posted', 1)"
    )
    command.upgrade(config, "0004")
    with engine.begin() as connection:
        connection.execute(orphan_entry)
        connection.execute(text("DELETE FROM entries"))

    command.downgrade(config, "0003")
    with (
        pytest.raises(IntegrityError, match="entries_operation_id_fkey"),
        engine.begin() as connection,
    ):
        connection.execute(orphan_entry)
    command.upgrade(config, "head")


def test_outcome_events_without_a_body_get_one_rendered_on_downgrade(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0005")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, status, request, error_code, "
                "error_message, completed_at, ledger_seq) VALUES "
                "('d1', 'debit', 'failed', '{\"account_id\": \"alice\", \"amount\": 5}', "
                "'insufficient_funds', 'alice has 0', now(), 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO outbox (message_id, routing_key, body) VALUES "
                "('d1', 'operation.debit.failed', NULL), "
                "('h1:expired', 'hold.expired', '{\"hold_id\": \"h1\"}')"
            )
        )

    command.downgrade(config, "0004")
    with engine.connect() as connection:
        bodies = dict(
            connection.execute(text("SELECT message_id, CAST(body AS jsonb) FROM outbox")).all()
        )
    assert bodies["h1:expired"] == {"hold_id": "h1"}
    rendered = bodies["d1"]
    assert {k: rendered[k] for k in ("operation_id", "type", "status", "error")} == {
        "operation_id": "d1",
        "type": "debit",
        "status": "failed",
        "error": {"code": "insufficient_funds", "message": "alice has 0"},
    }
    assert rendered["request"] == {"account_id": "alice", "amount": 5}
    assert rendered["schema_version"] == 1
    assert "balances" not in rendered and rendered["completed_at"] is not None


def test_operations_recorded_before_batches_had_an_order_keep_none_and_lose_it_on_downgrade(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0005")
    insert = "INSERT INTO operations (operation_id, type, request) VALUES ('{}', 'credit', '{{}}')"
    with engine.begin() as connection:
        connection.execute(text(insert.format("before")))

    command.upgrade(config, "0006")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, batch_id, batch_position) "
                "VALUES ('in-batch', 'credit', '{}', nextval('operation_batch_ids'), 1)"
            )
        )
        places = dict(
            connection.execute(text("SELECT operation_id, batch_position FROM operations")).all()
        )
        with (
            pytest.raises(IntegrityError, match="operations_batch_with_position"),
            connection.begin_nested(),
        ):
            connection.execute(
                text(
                    "INSERT INTO operations (operation_id, type, request, batch_id) "
                    "VALUES ('no-place', 'credit', '{}', 1)"
                )
            )
    assert places == {"before": None, "in-batch": 1}

    command.downgrade(config, "0005")
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT operation_id FROM operations ORDER BY 1")).scalars()
        assert list(kept) == ["before", "in-batch"]
    command.upgrade(config, "head")


def test_events_a_publisher_left_unnumbered_are_numbered_after_the_others_then_none_can_be(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0010")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox (message_id, routing_key, body, event_seq) VALUES "
                "('numbered', 'hold.expired', '{}', 1), ('left-1', 'hold.expired', '{}', NULL), "
                "('left-2', 'hold.expired', '{}', NULL)"
            )
        )
        connection.execute(text("UPDATE event_seq_counter SET last_seq = 1"))

    command.upgrade(config, "0011")
    with engine.connect() as connection:
        numbers = dict(connection.execute(text("SELECT message_id, event_seq FROM outbox")).all())
        last = connection.execute(text("SELECT last_seq FROM event_seq_counter")).scalar_one()
        with pytest.raises(IntegrityError, match="event_seq"), connection.begin_nested():
            connection.execute(
                text("INSERT INTO outbox (message_id, routing_key) VALUES ('none', 'x.y')")
            )
    assert numbers == {"numbered": 1, "left-1": 2, "left-2": 3} and last == 3

    command.downgrade(config, "0010")
    command.upgrade(config, "head")


def test_ledger_numbers_stay_unique_when_only_the_numbered_rows_are_indexed(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0012")
    insert = (
        "INSERT INTO operations (operation_id, type, request, status, completed_at, ledger_seq) "
        "VALUES ('{}', 'credit', '{{}}', {})"
    )
    with engine.begin() as connection:
        for operation_id in ("pending-1", "pending-2"):
            connection.execute(text(insert.format(operation_id, "'pending', NULL, NULL")))
        connection.execute(text(insert.format("done", "'succeeded', now(), 7")))
        with (
            pytest.raises(IntegrityError, match="operations_ledger_seq_key"),
            connection.begin_nested(),
        ):
            connection.execute(text(insert.format("same-number", "'succeeded', now(), 7")))

    command.downgrade(config, "0011")
    with engine.begin() as connection:
        kept = connection.execute(text("SELECT count(*) FROM operations")).scalar_one()
        with (
            pytest.raises(IntegrityError, match="operations_ledger_seq_key"),
            connection.begin_nested(),
        ):
            connection.execute(text(insert.format("same-number", "'succeeded', now(), 7")))
    assert kept == 3
    command.upgrade(config, "head")


def test_entries_get_their_operations_ledger_time_and_are_found_by_it_both_ways(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0012")
    completed = "2026-11-24 10:00:00.004+00"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, status, completed_at, "
                f"ledger_seq) VALUES ('c1', 'credit', '{{}}', 'succeeded', '{completed}', 1)"
            )
        )
        # As the first code wrote them: the transaction's start, before the decision.
        connection.execute(
            text(
                "INSERT INTO entries (operation_id, account_id, type, bucket, amount, "
                "created_at) VALUES "
                "('c1', 'alice', 'credit', 'posted', 5, '2026-11-24 10:00:00.001+00'), "
                "('c1', '@external:USD', 'credit', 'posted', -5, '2026-11-24 10:00:00.001+00')"
            )
        )

    command.upgrade(config, "0013")
    found = (
        "SELECT e.account_id FROM operations o JOIN entries e ON e.created_at = o.completed_at "
        "AND e.operation_id = o.operation_id WHERE o.operation_id = 'c1' ORDER BY 1"
    )
    with engine.connect() as connection:
        assert connection.execute(text(found)).scalars().all() == ["@external:USD", "alice"]
        indexes = entries_indexes(connection)
        assert "entries_by_time" in indexes and "entries_by_operation" not in indexes

    command.downgrade(config, "0012")
    with engine.connect() as connection:
        indexes = entries_indexes(connection)
        assert "entries_by_operation" in indexes and "entries_by_time" not in indexes
        assert len(connection.execute(text(found)).all()) == 2
    command.upgrade(config, "head")


def entries_indexes(connection: Any) -> set[str]:
    query = text("SELECT indexname FROM pg_indexes WHERE tablename = 'entries'")
    return set(connection.execute(query).scalars())


def test_client_accounts_get_the_time_of_their_newest_entry_and_lose_it_going_back(
    database: tuple[str, Any],
) -> None:
    url, engine = database
    config = alembic_config(url)
    command.upgrade(config, "0013")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO accounts (account_id, currency, is_external) VALUES "
                "('alice', 'USD', false), ('bob', 'USD', false), ('@external:USD', 'USD', true)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO entries (operation_id, account_id, type, amount, created_at) VALUES "
                "('c1', 'alice', 'credit', 5, '2026-11-24 10:00:00+00'), "
                "('c1', '@external:USD', 'credit', -5, '2026-11-24 10:00:00+00'), "
                "('c2', 'alice', 'credit', 5, '2026-11-24 11:00:00+00'), "
                "('c2', '@external:USD', 'credit', -5, '2026-11-24 11:00:00+00')"
            )
        )

    command.upgrade(config, "0014")
    newest = "SELECT account_id, last_entry_at FROM accounts ORDER BY account_id"
    with engine.connect() as connection:
        rows = [(a, at and at.isoformat()) for a, at in connection.execute(text(newest))]
    # bob has no entry; the external counter-account keeps none (it is never locked).
    assert rows == [("@external:USD", None), ("alice", "2026-11-24T11:00:00+00:00"), ("bob", None)]

    command.downgrade(config, "0013")
    with engine.connect() as connection:
        columns = connection.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'")
        ).scalars()
        assert "last_entry_at" not in set(columns)
    command.upgrade(config, "head")
