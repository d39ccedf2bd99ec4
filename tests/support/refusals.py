"""A database that refuses one operation: triggers that raise for its rows, as a defect would.

Installed on a test's database, a trigger makes PostgreSQL refuse what the
ledger writes for one operation id (its entries, or its outcome), which no
request can do: the way to show that one operation the service cannot
apply holds back no other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

_FUNCTION = (
    "CREATE OR REPLACE FUNCTION refuse_operation() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; "
    "END $$"
)


def _name(table: str, operation_id: str) -> str:
    return "refuse_" + table + "_" + "".join(c if c.isalnum() else "_" for c in operation_id)


def refuse(engine: Any, table: str, operation_id: str) -> None:
    """Make inserts into `entries`, or outcomes in `operations`, of this operation fail."""
    condition = (
        "NEW.operation_id = :id"
        if table == "entries"
        else "NEW.operation_id = :id AND NEW.status <> 'pending'"
    )
    event = "INSERT" if table == "entries" else "UPDATE"
    trigger = (
        f"CREATE TRIGGER {_name(table, operation_id)} BEFORE {event} ON {table} FOR EACH ROW "
        f"WHEN ({condition.replace(':id', _literal(operation_id))}) "
        "EXECUTE FUNCTION refuse_operation()"
    )
    with engine.begin() as connection:
        connection.execute(text(_FUNCTION))
        connection.execute(text(trigger))


def allow(engine: Any, table: str, operation_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP TRIGGER IF EXISTS {_name(table, operation_id)} ON {table}"))


def _literal(value: str) -> str:
    assert "'" not in value and "\\" not in value
    return f"'{value}'"
