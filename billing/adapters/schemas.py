"""Marshmallow schemas: the request bodies the API and the AMQP intake accept, and the answers.

An operation's body is judged by the gate (`billing.gate`), the one place
its rules live: the operation schemas load through it, and so does
`parse_operation` (batch items, intake messages), so a request is refused
(or accepted) the same way whether it came over HTTP, in a batch, over
`billing.requests` or straight onto the task queue. Their fields document
the bodies for OpenAPI; tests/unit/test_gated_schemas.py holds what those
fields declare to what the gate decides.

Money is strict: amounts are JSON integers only (no floats, strings or
booleans), and an unknown field is refused, because a typo must not be
silently ignored where money moves.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from billing import gate, limits
from billing.currencies import ISO_4217_CODES
from billing.domain import ErrorCode


class StrictInteger(fields.Integer):
    """An integer that must arrive as a JSON integer: 10.0, "10" and true are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Must be a JSON integer.")
        return int(super()._deserialize(value, attr, data, **kwargs))


class StrictBoolean(fields.Boolean):
    """A boolean that must arrive as JSON true or false: 1 and "true" are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Must be a JSON boolean.")
        return value


def identifier(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(limits.identifier_pattern, error=gate.IDENTIFIER_MESSAGE),
        **kwargs,
    )


def amount(**kwargs: Any) -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(min=limits.amount_min, max=limits.amount_max), **kwargs
    )


class StorableJsonObject(fields.Dict):
    """A JSON object within the metadata limits, which PostgreSQL's jsonb can store unchanged.

    Judged by the gate's rule for metadata (`gate.metadata_problem`), the
    same for an account's metadata as for an operation's.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        problem = gate.metadata_problem(loaded)
        if problem is not None:
            raise ValidationError(problem)
        return loaded


def operation_metadata() -> StorableJsonObject:
    return StorableJsonObject(
        keys=fields.String(),
        metadata={
            "description": f"any JSON object, at most {limits.metadata_size_max_bytes} bytes as "
            f"compact JSON and {limits.metadata_depth_max} levels deep (itself the first); "
            "stored with the operation and echoed in it and its events",
            "example": {"order_id": "o-42"},
        },
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class AccountCreateSchema(StrictSchema):
    account_id = identifier(required=True, metadata={"example": "alice"})
    currency = fields.String(
        required=True,
        validate=validate.OneOf(
            sorted(ISO_4217_CODES), error="Must be an upper-case ISO 4217 currency code."
        ),
        metadata={"example": "USD"},
    )
    overdraft_limit = StrictInteger(
        load_default=0,
        validate=validate.Range(min=0, max=limits.overdraft_limit_max),
        metadata={"example": 0},
    )
    metadata = StorableJsonObject(
        keys=fields.String(),
        load_default=dict,
        metadata={
            "description": f"any JSON object, at most {limits.metadata_size_max_bytes} bytes as "
            f"compact JSON and {limits.metadata_depth_max} levels deep (itself the first)",
            "example": {"name": "Alice"},
        },
    )


class AccountSchema(Schema):
    account_id = fields.String(required=True)
    currency = fields.String(required=True)
    posted = fields.Integer(required=True)
    held = fields.Integer(required=True)
    available = fields.Integer(required=True)
    overdraft_limit = fields.Integer(required=True)
    metadata = fields.Dict(required=True)
    created_at = fields.String(required=True)


class PageQuerySchema(StrictSchema):
    limit = fields.Integer(
        load_default=limits.page_size_default,
        validate=validate.Range(min=1, max=limits.page_size_max),
    )
    cursor = fields.String(
        load_default=None, validate=validate.Regexp(r"^[0-9]{1,19}\Z", error="Not a valid cursor.")
    )


class EntrySchema(Schema):
    entry_id = fields.Integer(required=True)
    operation_id = fields.String(required=True)
    type = fields.String(required=True)
    bucket = fields.String(required=True, metadata={"description": "posted or held"})
    amount = fields.Integer(required=True, metadata={"description": "signed, minor units"})
    posted_after = fields.Integer(allow_none=True)
    held_after = fields.Integer(allow_none=True)
    created_at = fields.String(required=True)


class EntryPageSchema(Schema):
    items = fields.List(fields.Nested(EntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class GatedSchema(StrictSchema):
    """An operation's body: its fields document it, the gate judges it.

    Loading is `gate.check_request` for the schema's operation type: what
    the API accepts is exactly what the ledger would, whatever the fields
    below say (tests/unit/test_gated_schemas.py keeps them saying the same).
    """

    operation_type: ClassVar[str]
    # Fields of the request that come from the URL, not the body.
    given_apart: ClassVar[tuple[str, ...]] = ()

    def load(  # type: ignore[override]
        self, data: Any, *, many: bool | None = None, **_: Any
    ) -> dict[str, Any]:
        assert not many, "an operation schema loads one body"
        problems = gate.check_request(self.operation_type, data, given_apart=self.given_apart)
        if problems:
            raise ValidationError(problems)
        return dict(data)


class CreditSchema(GatedSchema):
    operation_type = "credit"
    operation_id = identifier(required=True, metadata={"example": "op-1"})
    account_id = identifier(required=True, metadata={"example": "alice"})
    amount = amount(required=True, metadata={"example": 1000})
    metadata = operation_metadata()


class DebitSchema(CreditSchema):
    operation_type = "debit"


class TransferSchema(GatedSchema):
    operation_type = "transfer"
    operation_id = identifier(required=True, metadata={"example": "op-2"})
    source_account_id = identifier(required=True, metadata={"example": "alice"})
    destination_account_id = identifier(required=True, metadata={"example": "bob"})
    amount = amount(required=True, metadata={"example": 500})
    metadata = operation_metadata()


class ErrorDetailSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class OperationErrorSchema(Schema):
    code = fields.String(required=True, metadata={"enum": [code.value for code in ErrorCode]})
    message = fields.String(required=True)


class BalanceSchema(Schema):
    posted = fields.Integer(required=True)
    held = fields.Integer(required=True)
    available = fields.Integer(required=True)


class OperationSchema(Schema):
    operation_id = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["pending", "succeeded", "failed"]})
    request = fields.Dict(required=True)
    error = fields.Nested(OperationErrorSchema, allow_none=True, required=True)
    balances = fields.Dict(keys=fields.String(), values=fields.Nested(BalanceSchema))
    accepted_at = fields.String(required=True)
    completed_at = fields.String(allow_none=True, required=True)
    metadata = fields.Dict(
        required=True, metadata={"description": "as given with the operation; {} without"}
    )
    reversed = fields.Integer(
        metadata={
            "description": "credits, debits, transfers and captures: the sum of their "
            "succeeded reversals (in an event: as it was when the operation completed, 0)"
        }
    )
    reversals = fields.List(
        fields.String(),
        metadata={"description": "with `reversed`: the ids of those reversals, oldest first"},
    )


class WaitQuerySchema(StrictSchema):
    wait = fields.Float(
        load_default=0,
        allow_nan=False,
        validate=validate.Range(min=0, max=limits.operation_wait_max_s),
    )


class HoldCreateSchema(GatedSchema):
    operation_type = "hold"
    operation_id = identifier(
        required=True, metadata={"description": "also the hold's id", "example": "hold-1"}
    )
    account_id = identifier(required=True, metadata={"example": "alice"})
    amount = amount(required=True, metadata={"example": 300})
    destination_account_id = identifier(
        metadata={
            "description": "makes the hold a two-phase transfer to this account",
            "example": "bob",
        }
    )
    expires_in = StrictInteger(
        validate=validate.Range(min=limits.hold_expires_in_min_s, max=limits.hold_expires_in_max_s),
        metadata={
            "description": "seconds from when the hold applies until it expires",
            "example": 3600,
        },
    )
    metadata = operation_metadata()


class CaptureSchema(GatedSchema):
    operation_type = "capture"
    given_apart = ("hold_id",)
    operation_id = identifier(required=True, metadata={"example": "capture-1"})
    amount = amount(
        metadata={"description": "default: the remaining amount of the hold", "example": 200}
    )
    final = StrictBoolean(
        metadata={"description": "release the rest (default true)", "example": True}
    )
    metadata = operation_metadata()


class ReleaseSchema(GatedSchema):
    operation_type = "release"
    given_apart = ("hold_id",)
    operation_id = identifier(required=True, metadata={"example": "release-1"})
    metadata = operation_metadata()


class ReversalSchema(GatedSchema):
    operation_type = "reversal"
    operation_id = identifier(required=True, metadata={"example": "refund-1"})
    reverses = identifier(
        required=True,
        metadata={
            "description": "the succeeded credit, debit, transfer or capture to move back",
            "example": "op-2",
        },
    )
    amount = amount(
        metadata={
            "description": "default: all that remains reversible of that operation",
            "example": 200,
        }
    )
    metadata = operation_metadata()


class HoldSchema(Schema):
    hold_id = fields.String(required=True)
    account_id = fields.String(required=True)
    destination_account_id = fields.String(allow_none=True, required=True)
    amount = fields.Integer(required=True)
    captured = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["active", "captured", "released", "expired"]}
    )
    expires_at = fields.String(allow_none=True, required=True)
    created_at = fields.String(required=True)


class HoldPageSchema(Schema):
    items = fields.List(fields.Nested(HoldSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class HoldQuerySchema(PageQuerySchema):
    status = fields.String(
        load_default=None, validate=validate.OneOf(["active", "captured", "released", "expired"])
    )


def parse_operation(message: Any) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """Validate one operation as published to `billing.requests` or sent in a batch.

    The result is (type, the fields as given) for a good one, or the error
    body (code, message, details) for a bad one. The gate judges it, without
    marshmallow: loading each item of a batch through a schema was over a
    third of the API's CPU in batches of 500.
    """
    if not isinstance(message, dict):
        return {"code": "validation_error", "message": "An operation must be a JSON object."}
    fields = dict(message)
    operation_type = fields.pop("type", None)
    problems = gate.check_request(operation_type, fields)
    if problems:
        return {
            "code": "validation_error",
            "message": "The request is not valid.",
            "details": problems,
        }
    return str(operation_type), fields


class BatchSchema(StrictSchema):
    operations = fields.List(
        # `null` is an item too: it gets its own validation_error like any
        # other that is not an object, and refuses nothing else.
        fields.Raw(
            allow_none=True,
            metadata={
                "description": "one operation; a malformed item gets its own validation_error"
            },
        ),
        required=True,
        validate=validate.Length(min=1, max=limits.batch_size_max),
        metadata={
            "description": "operations as on billing.requests: a `type` and the fields of "
            "the matching POST (`hold_id` for capture and release)",
            "example": [
                {"type": "credit", "operation_id": "c-1", "account_id": "alice", "amount": 500},
                {
                    "type": "transfer",
                    "operation_id": "t-1",
                    "source_account_id": "alice",
                    "destination_account_id": "bob",
                    "amount": 200,
                },
            ],
        },
    )


class BatchItemSchema(Schema):
    operation_id = fields.String(allow_none=True, required=True)
    result = fields.String(
        required=True,
        metadata={"enum": ["accepted", "repeated", "idempotency_conflict", "validation_error"]},
    )
    operation = fields.Nested(OperationSchema, allow_none=True, required=True)
    error = fields.Nested(ErrorDetailSchema, allow_none=True, required=True)


class BatchResultSchema(Schema):
    items = fields.List(fields.Nested(BatchItemSchema), required=True)


class DigitsInteger(fields.Integer):
    """A whole number in a query string, in ASCII digits only: no sign, space or other script."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise ValidationError("Must be a whole number in digits, 0 or more (at most 18).")
        return int(super()._deserialize(value, attr, data, **kwargs))


_DIGITS = re.compile(r"[0-9]{1,18}")


class EventPageQuerySchema(StrictSchema):
    after = DigitsInteger(
        load_default=0,
        metadata={"description": "the last event_seq read; 0 (the default) from the start"},
    )
    limit = fields.Integer(
        load_default=limits.page_size_default,
        validate=validate.Range(min=1, max=limits.page_size_max),
    )


class FeedEventSchema(Schema):
    event_seq = fields.Integer(required=True, metadata={"description": "also in the body"})
    routing_key = fields.String(required=True, metadata={"example": "operation.credit.succeeded"})
    message_id = fields.String(required=True)
    body = fields.Dict(
        required=True,
        metadata={"description": "the event's body, as published to billing.events"},
    )


class EventPageSchema(Schema):
    items = fields.List(fields.Nested(FeedEventSchema), required=True)
    next_after = fields.Integer(
        required=True, metadata={"description": "the `after` of the next page"}
    )
