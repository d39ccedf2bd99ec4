"""Marshmallow schemas: the request bodies the API accepts and the bodies it answers.

Money is strict: amounts are JSON integers only (no floats, strings or
booleans), and an unknown field is refused, because a typo must not be
silently ignored where money moves.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from billing import limits
from billing.currencies import ISO_4217_CODES


class StrictInteger(fields.Integer):
    """An integer that must arrive as a JSON integer: 10.0, "10" and true are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Must be a JSON integer.")
        return int(super()._deserialize(value, attr, data, **kwargs))


def identifier(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(
            limits.identifier_pattern,
            error="Must be 1 to 64 characters of letters, digits and . _ : -",
        ),
        **kwargs,
    )


def amount(**kwargs: Any) -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(min=limits.amount_min, max=limits.amount_max), **kwargs
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class AccountCreateSchema(StrictSchema):
    account_id = identifier(required=True)
    currency = fields.String(
        required=True,
        validate=validate.OneOf(
            sorted(ISO_4217_CODES), error="Must be an upper-case ISO 4217 currency code."
        ),
        metadata={"example": "USD"},
    )
    overdraft_limit = StrictInteger(
        load_default=0, validate=validate.Range(min=0, max=limits.overdraft_limit_max)
    )
    metadata = fields.Dict(keys=fields.String(), load_default=dict)


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


class CreditSchema(StrictSchema):
    operation_id = identifier(required=True)
    account_id = identifier(required=True)
    amount = amount(required=True)


class DebitSchema(CreditSchema):
    pass


class TransferSchema(StrictSchema):
    operation_id = identifier(required=True)
    source_account_id = identifier(required=True)
    destination_account_id = identifier(required=True)
    amount = amount(required=True)


class ErrorDetailSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class OperationErrorSchema(Schema):
    code = fields.String(required=True)
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


class WaitQuerySchema(StrictSchema):
    wait = fields.Float(
        load_default=0,
        allow_nan=False,
        validate=validate.Range(min=0, max=limits.operation_wait_max_s),
    )
