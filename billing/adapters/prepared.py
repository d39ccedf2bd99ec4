"""The ledger's small statements, prepared once per connection and planned once.

PostgreSQL plans every statement it is sent. The ledger's statements are the
same text on every call (every list goes as one array literal: `pgarrays`),
so for small calls one plan serves them all: prepared on a connection
(`PREPARE`, once) and run there with `EXECUTE` under a generic plan, a call
costs no planning. A quiet service applies one operation per transaction,
and planning was about half of each of its statements' time.

Only calls of at most `limits.prepared_rows_max` rows run this way. A big
batch is planned for its own size as before: its planning is a small part
of its time, and its plans were fenced against statistics that mislead
(the comments at each statement say how); a generic plan, made without the
array's length, is not worth that risk there.

The names prepared on a connection are kept in the pool's record of the
DBAPI connection (`PoolProxiedConnection.info`), which lives exactly as long
as the connection: a connection made anew (after the database restarted, or
the pool replaced a dead one) prepares again. A prepared statement outlives
a rollback. Should the server not know a name the record lists (something
ran `DEALLOCATE` or `DISCARD` on it, a pooler in between switched server
connections, or a migration changed the type of a column a statement
returns), the statement fails as a transient error and the connection is
dropped: the retried transaction runs on a new one, which prepares again.
A pooler between the service and PostgreSQL must therefore keep each client
connection on one server connection (PgBouncer's session mode): in
transaction mode most prepared calls would fail and be retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, TextClause
from sqlalchemy.exc import DBAPIError

from billing import limits
from billing.ports import TransientError

# The server's prepared statements and this connection's record of them disagree:
# a name it does not know (26000) or knows already (42P05), or a plan whose
# result changed type under a migration (0A000, "cached plan must not change
# result type").
_OUT_OF_STEP = {"26000", "42P05", "0A000"}
_INFO_KEY = "billing.prepared"
# A bind parameter of text(): `:name`, not `::` and not an escaped `\:`.
_BIND = re.compile(r"(?<![:\\\w]):(\w+)")
# Plans made once, for whatever the parameters: the point of preparing.
_GENERIC = "SET LOCAL plan_cache_mode = force_generic_plan; "


@dataclass(frozen=True)
class Prepared:
    """A statement (or several, run in one round trip) and how to prepare and run it."""

    statement: TextClause
    names: tuple[str, ...]
    prepares: tuple[str, ...]
    execute_sql: str

    def execute(
        self, connection: Connection, params: Mapping[str, Any], *, rows: int
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run it; prepared when `rows` is small, else planned for these parameters."""
        if rows > limits.prepared_rows_max:
            return connection.execute(self.statement, params)
        prepared: set[str] = connection.connection.info.setdefault(_INFO_KEY, set())
        try:
            for name, prepare in zip(self.names, self.prepares, strict=True):
                if name not in prepared:
                    connection.exec_driver_sql(prepare)
                    prepared.add(name)
            return connection.exec_driver_sql(self.execute_sql, dict(params))
        except DBAPIError as error:
            if getattr(error.orig, "pgcode", None) not in _OUT_OF_STEP:
                raise
            # The pool drops the connection; the retry gets a new one, which prepares anew.
            connection.invalidate()
            raise TransientError(f"prepared statements out of step: {error.orig}") from error


def prepared(name: str, statement: TextClause, *, prefix: str = "") -> Prepared:
    """`statement` (statements separated by `; `, after the `SET LOCAL`s of `prefix`),
    prepared as `billing_<name>_<n>` for small calls.

    `prefix` is sent as it is before every call: settings that its plans
    were made under (a plan is made again when statistics change, and then
    under the settings of that moment).
    """
    text = str(statement.text)
    assert text.startswith(prefix), f"{name}: the statement does not start with its prefix"
    parts = [p for p in text[len(prefix) :].split("; ") if p.strip()]
    names, prepares, executes = [], [], []
    for n, part in enumerate(parts, start=1):
        statement_name = f"billing_{name}_{n}"
        order: list[str] = []

        def number(match: re.Match[str], order: list[str] = order) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        body = _BIND.sub(number, part).replace("\\:", ":")
        assert "%" not in body, f"{name}: a % would be read as a parameter"
        names.append(statement_name)
        prepares.append(f"PREPARE {statement_name} AS {body}")
        arguments = ", ".join(f"%({p})s" for p in order)
        executes.append(
            f"EXECUTE {statement_name}({arguments})" if order else f"EXECUTE {statement_name}"
        )
    return Prepared(
        statement,
        tuple(names),
        tuple(prepares),
        _GENERIC + prefix + "; ".join(executes),
    )
