"""The representation of an operation, for the API and for its event: one list of fields.

`OPERATION_FIELDS` is the only place that says which fields an operation
shows and where each comes from. The API's rendering (`render_operation`)
is made from it here; the outcome event's body, rendered by PostgreSQL
from the operation's row for speed, is made from it in
`adapters.outbox_reads`; a property test holds the two equal
(tests/integration/test_representation.py).

Adding a field is one line here, plus its storage: a column of the
`operations` table, carried under the same name by the record (on its
`Operation` when the client's request sets it, on the `OperationRecord`
otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any

from billing.domain import Operation
from billing.ports import OperationRecord


class FieldKind(StrEnum):
    """How a column's value is shown; each kind has one Python and one SQL rendering."""

    string = "string"  # a JSON string, null when the column is NULL
    timestamp = "timestamp"  # ISO 8601 in UTC with microseconds, null when NULL
    json = "json"  # the jsonb column's value as it is
    error = "error"  # {"code", "message"} from two columns, null without a code


@dataclass(frozen=True)
class Field:
    """One field of the representation: its name, its kind and the columns it is read from."""

    name: str
    kind: FieldKind
    columns: tuple[str, ...]
    # Left out of the representation, rather than shown as null, when NULL.
    absent_when_null: bool = False

    def __post_init__(self) -> None:
        # The name is spelled into SQL as it is: no quoting to get wrong.
        assert self.name.isidentifier() and self.name.isascii(), self.name
        assert all(c.isidentifier() and c.isascii() for c in self.columns), self.columns
        assert len(self.columns) == (2 if self.kind is FieldKind.error else 1), self


# In the order the API shows them; the event's body has its keys sorted.
OPERATION_FIELDS: tuple[Field, ...] = (
    Field("operation_id", FieldKind.string, ("operation_id",)),
    Field("type", FieldKind.string, ("type",)),
    Field("status", FieldKind.string, ("status",)),
    Field("request", FieldKind.json, ("request",)),
    Field("error", FieldKind.error, ("error_code", "error_message")),
    Field("balances", FieldKind.json, ("balances",), absent_when_null=True),
    Field("accepted_at", FieldKind.timestamp, ("accepted_at",)),
    Field("completed_at", FieldKind.timestamp, ("completed_at",)),
)

# What an event's body has besides the representation.
EVENT_SCHEMA_VERSION = 1

_ON_OPERATION = frozenset(f.name for f in dataclasses.fields(Operation))


def _getter(column: str) -> Callable[[OperationRecord], Any]:
    return attrgetter(f"operation.{column}" if column in _ON_OPERATION else column)


def _show(kind: FieldKind, values: list[Any]) -> Any:
    value = values[0]
    if kind is FieldKind.error:
        return None if value is None else {"code": value, "message": values[1]}
    if value is None or kind is FieldKind.json:
        return value
    if kind is FieldKind.timestamp:
        return value.isoformat(timespec="microseconds")
    return str(value)  # a string kind; an enum shows its value


_READERS = tuple(
    (field.name, field.kind, field.absent_when_null, tuple(_getter(c) for c in field.columns))
    for field in OPERATION_FIELDS
)


def render_operation(record: OperationRecord) -> dict[str, Any]:
    """The contract's representation of an operation, as the API answers it."""
    body: dict[str, Any] = {}
    for name, kind, absent_when_null, getters in _READERS:
        values = [get(record) for get in getters]
        if values[0] is None and absent_when_null:
            continue
        body[name] = _show(kind, values)
    return body
