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
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any

from billing.domain import Operation
from billing.ports import OperationRecord
from billing.reversals import REVERSIBLE_TYPES


class FieldKind(StrEnum):
    """How a column's value is shown; each kind has one Python and one SQL rendering."""

    string = "string"  # a JSON string, null when the column is NULL
    timestamp = "timestamp"  # ISO 8601 in UTC with microseconds, null when NULL
    json = "json"  # the jsonb column's value as it is
    error = "error"  # {"code", "message"} from two columns, null without a code
    integer = "integer"  # a JSON number
    strings = "strings"  # a text array as a JSON list, [] when NULL
    # The client's metadata is stored in the request and shown apart from it.
    request = "request"  # the request jsonb without its metadata
    metadata = "metadata"  # the request's metadata, {} without


@dataclass(frozen=True)
class Field:
    """One field of the representation: its name, its kind and the columns it is read from."""

    name: str
    kind: FieldKind
    columns: tuple[str, ...]
    # Left out of the representation, rather than shown as null, when NULL.
    absent_when_null: bool = False
    # Shown only for operations of these types (None: of every type).
    types: frozenset[str] | None = None
    # The field's JSON text in the operation's event, for a field that changes after
    # the operation completed: the event is the operation as it completed, so that
    # every copy of it is the same whenever it is published.
    when_completed: str | None = None

    def __post_init__(self) -> None:
        # The name is spelled into SQL as it is: no quoting to get wrong.
        assert self.name.isidentifier() and self.name.isascii(), self.name
        assert all(c.isidentifier() and c.isascii() for c in self.columns), self.columns
        assert all(t.isidentifier() and t.isascii() for t in self.types or ()), self.types
        assert len(self.columns) == (2 if self.kind is FieldKind.error else 1), self


_REVERSIBLE = frozenset(t.value for t in REVERSIBLE_TYPES)

# In the order the API shows them; the event's body has its keys sorted.
OPERATION_FIELDS: tuple[Field, ...] = (
    Field("operation_id", FieldKind.string, ("operation_id",)),
    Field("type", FieldKind.string, ("type",)),
    Field("status", FieldKind.string, ("status",)),
    Field("request", FieldKind.request, ("request",)),
    Field("metadata", FieldKind.metadata, ("request",)),
    Field("error", FieldKind.error, ("error_code", "error_message")),
    Field("balances", FieldKind.json, ("balances",), absent_when_null=True),
    Field("accepted_at", FieldKind.timestamp, ("accepted_at",)),
    Field("completed_at", FieldKind.timestamp, ("completed_at",)),
    Field("reversed", FieldKind.integer, ("reversed",), types=_REVERSIBLE, when_completed="0"),
    Field("reversals", FieldKind.strings, ("reversals",), types=_REVERSIBLE, when_completed="[]"),
)

# What an event's body has besides the representation.
EVENT_SCHEMA_VERSION = 1

_ON_OPERATION = frozenset(f.name for f in dataclasses.fields(Operation))


def _getter(column: str) -> Callable[[OperationRecord], Any]:
    return attrgetter(f"operation.{column}" if column in _ON_OPERATION else column)


def _show(kind: FieldKind, values: list[Any]) -> Any:
    value = values[0]
    if kind is FieldKind.request:
        return {k: v for k, v in value.items() if k != "metadata"} if "metadata" in value else value
    if kind is FieldKind.metadata:
        return value.get("metadata", {})
    if kind is FieldKind.strings:
        return list(value or [])
    if kind is FieldKind.error:
        return None if value is None else {"code": value, "message": values[1]}
    if value is None or kind is FieldKind.json:
        return value
    if kind is FieldKind.timestamp:
        return value.isoformat(timespec="microseconds")
    if kind is FieldKind.integer:
        return int(value)
    return str(value)  # a string kind; an enum shows its value


_READERS = tuple(
    (
        field.name,
        field.kind,
        field.absent_when_null,
        field.types,
        None if field.when_completed is None else json.loads(field.when_completed),
        tuple(_getter(c) for c in field.columns),
    )
    for field in OPERATION_FIELDS
)


def render_operation(record: OperationRecord, *, as_completed: bool = False) -> dict[str, Any]:
    """The contract's representation of an operation, as the API answers it.

    `as_completed`: as its event shows it, the operation as it completed.
    """
    body: dict[str, Any] = {}
    operation_type = record.operation.type
    for name, kind, absent_when_null, types, when_completed, getters in _READERS:
        if types is not None and operation_type not in types:
            continue
        if as_completed and when_completed is not None:
            body[name] = when_completed
            continue
        values = [get(record) for get in getters]
        if values[0] is None and absent_when_null:
            continue
        body[name] = _show(kind, values)
    return body
