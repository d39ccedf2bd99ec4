"""The gate before the ledger: an operation's type and request checked against the contract.

One set of rules for every door. The API's schemas, the batch and the AMQP
intake judge a body with `check_request`, and so does the
`billing.submit_request` task, whoever put it on the queue (the intake,
Flower, anyone with the broker's password); the ledger checks every
recorded operation again with `refusal` before it is applied, so a request
that breaks the rules (tampered with in the database, say) never moves
money, whatever door it came by.

Each type allows a fixed set of fields, some required; a field's value is
an identifier (1 to 64 of `[A-Za-z0-9._:-]`), an amount (a JSON integer,
never a boolean or a float, within `amount_min..amount_max`), `expires_in`
(whole seconds within its range) or `final` (a boolean). Anything else is
refused, unknown fields included. The messages are marshmallow's where it
has one, so a client sees the same words whichever door it used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from typing import NamedTuple

from billing import limits
from billing.domain import ErrorCode, Failure, Operation

IDENTIFIER_MESSAGE = (
    f"Must be 1 to {limits.identifier_length_max} characters of letters, digits and . _ : -"
)
INTEGER_MESSAGE = "Must be a JSON integer."
BOOLEAN_MESSAGE = "Must be a JSON boolean."
MISSING_MESSAGE = "Missing data for required field."
UNKNOWN_MESSAGE = "Unknown field."
NOT_AN_OBJECT_MESSAGE = "Invalid input type."

_IDENTIFIER = re.compile(limits.identifier_pattern)


def identifier_problem(value: object) -> str | None:
    if isinstance(value, str):
        return None if _IDENTIFIER.match(value) else IDENTIFIER_MESSAGE
    return "Not a valid string."


def _integer_problem(value: object, low: int, high: int) -> str | None:
    # A bool is an int to Python; JSON true is not an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        return INTEGER_MESSAGE
    if not low <= value <= high:
        return f"Must be greater than or equal to {low} and less than or equal to {high}."
    return None


def amount_problem(value: object) -> str | None:
    return _integer_problem(value, limits.amount_min, limits.amount_max)


def expires_in_problem(value: object) -> str | None:
    return _integer_problem(value, limits.hold_expires_in_min_s, limits.hold_expires_in_max_s)


def final_problem(value: object) -> str | None:
    return None if isinstance(value, bool) else BOOLEAN_MESSAGE


def metadata_problem(value: object) -> str | None:
    """What keeps a value from being metadata: a JSON object within the metadata limits,
    which PostgreSQL's jsonb stores unchanged (accounts' and operations' alike).

    At most `metadata_depth_max` deep (the object itself the first level) and
    `metadata_size_max_bytes` as compact JSON in UTF-8. jsonb refuses NaN and
    infinity, the NUL character and unpaired surrogates: each must be refused
    here, not found at the insert.
    """
    if not isinstance(value, dict):
        return "Not a valid mapping type."
    depth_max = limits.metadata_depth_max
    # Walked with an explicit stack: recursion is what deep input must not exhaust.
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list) and depth > depth_max:
            return f"Must not be nested more than {depth_max} deep."
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "Must not contain NaN or infinity."
        elif isinstance(item, str) and not _storable_text(item):
            return "Text must be valid Unicode without NUL characters."
        elif not isinstance(item, str | int | float | bool | None):
            return "Must hold JSON values only."
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if len(compact) > limits.metadata_size_max_bytes:
        return f"Must be at most {limits.metadata_size_max_bytes} bytes as compact JSON."
    return None


def _storable_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate, e.g. from "\ud800" in the JSON
        return False
    return "\x00" not in text


class Rule(NamedTuple):
    """How one field of a request is judged, and whether it must be there."""

    problem: Callable[[object], str | None]
    required: bool


_ID = Rule(identifier_problem, required=True)
_OPTIONAL_ID = Rule(identifier_problem, required=False)
_AMOUNT = Rule(amount_problem, required=True)
_OPTIONAL_AMOUNT = Rule(amount_problem, required=False)
# Any operation may carry metadata: stored in its request, echoed in its
# representation and events, compared when its id comes again.
_METADATA = Rule(metadata_problem, required=False)

# The fields of each type a client may submit, `operation_id` included; for a
# capture or a release `hold_id` comes from the URL over HTTP and from the
# body over AMQP and in batches. `expiry` is not here: the service records
# it itself, already applied, so a pending one was never a client's request.
_REQUEST_FIELDS: dict[str, dict[str, Rule]] = {
    "credit": {"operation_id": _ID, "account_id": _ID, "amount": _AMOUNT},
    "debit": {"operation_id": _ID, "account_id": _ID, "amount": _AMOUNT},
    "transfer": {
        "operation_id": _ID,
        "source_account_id": _ID,
        "destination_account_id": _ID,
        "amount": _AMOUNT,
    },
    "hold": {
        "operation_id": _ID,
        "account_id": _ID,
        "amount": _AMOUNT,
        "destination_account_id": _OPTIONAL_ID,
        "expires_in": Rule(expires_in_problem, required=False),
    },
    "capture": {
        "operation_id": _ID,
        "hold_id": _ID,
        "amount": _OPTIONAL_AMOUNT,
        "final": Rule(final_problem, required=False),
    },
    "release": {"operation_id": _ID, "hold_id": _ID},
    # `amount` defaults to all that remains reversible of the reversed operation.
    "reversal": {"operation_id": _ID, "reverses": _ID, "amount": _OPTIONAL_AMOUNT},
}
REQUESTS: dict[str, dict[str, Rule]] = {
    kind: {**rules, "metadata": _METADATA} for kind, rules in _REQUEST_FIELDS.items()
}


def check_request(
    operation_type: object, fields: object, *, given_apart: Collection[str] = ()
) -> dict[str, list[str]]:
    """What is wrong with a request of this type, by field; empty when it keeps the rules.

    `fields` holds the request with its `operation_id`; the fields named in
    `given_apart` (a capture's `hold_id` in the URL) must not be among them.
    """
    rules = REQUESTS.get(operation_type) if isinstance(operation_type, str) else None
    if rules is None:
        return {"type": [f"Must be one of: {', '.join(REQUESTS)}."]}
    if not isinstance(fields, dict):
        return {"_schema": [NOT_AN_OBJECT_MESSAGE]}
    problems: dict[str, list[str]] = {}
    for name, value in fields.items():
        rule = rules.get(name) if isinstance(name, str) else None
        if rule is None or name in given_apart:
            problems[str(name)] = [UNKNOWN_MESSAGE]
            continue
        problem = rule.problem(value)
        if problem is not None:
            problems[name] = [problem]
    for name, rule in rules.items():
        if rule.required and name not in fields and name not in given_apart:
            problems[name] = [MISSING_MESSAGE]
    return problems


def refusal(operation: Operation) -> Failure | None:
    """The failure of a recorded operation that breaks the rules, to end it without applying it.

    It passed the gate when it was accepted, so it was changed since (or
    came by a door that skipped the gate): a fault for the operators, not a
    client's mistake, hence `internal_error`.
    """
    problems = check_request(operation.type, operation.request, given_apart=("operation_id",))
    id_problem = identifier_problem(operation.operation_id)
    if id_problem is not None:
        problems["operation_id"] = [id_problem]
    if not problems:
        return None
    described = "; ".join(f"{name}: {' '.join(found)}" for name, found in sorted(problems.items()))
    message = f"the recorded request breaks the rules ({described})"
    return Failure(ErrorCode.internal_error, message[: limits.error_message_chars_max])
