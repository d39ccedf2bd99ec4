"""Marshmallow schemas of the read API: the query strings of the lists and of balances at a moment.

Every query string is strict like a body (an unknown parameter is refused,
see the routes' `unknown=RAISE`): a misspelt filter must not silently list
everything. The cursors and moments are judged by `billing.pages`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from billing import gate, limits, pages
from billing.adapters.schemas import AccountSchema, OperationSchema, PageQuerySchema, StrictSchema
from billing.currencies import ISO_4217_CODES
from billing.domain import OperationType, Status


class Moment(fields.String):
    """An RFC 3339 date-time with a time zone, loaded as an aware datetime in UTC."""

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> datetime:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return pages.parse_moment(text)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class OperationsCursor(fields.String):
    """An operations cursor, loaded as (accepted_at, operation_id)."""

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[datetime, str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return pages.parse_operations_cursor(text)
        except ValueError as error:
            raise ValidationError(str(error)) from None


def _page_size() -> fields.Integer:
    return fields.Integer(
        load_default=limits.page_size_default,
        validate=validate.Range(min=1, max=limits.page_size_max),
    )


class OperationQuerySchema(StrictSchema):
    account_id = fields.String(
        load_default=None,
        validate=validate.Regexp(limits.identifier_pattern, error=gate.IDENTIFIER_MESSAGE),
        metadata={
            "description": "operations that involve the account: credits, debits and holds on "
            "it, transfers from or to it, holds paying it, and the captures, releases and "
            "expiries of its holds (either side)"
        },
    )
    # Read from the enums, so a type or status added there is accepted here.
    type = fields.String(
        load_default=None, validate=validate.OneOf([t.value for t in OperationType])
    )
    status = fields.String(load_default=None, validate=validate.OneOf([s.value for s in Status]))
    since = Moment(
        load_default=None,
        metadata={"description": "accepted at or after (RFC 3339, with a time zone)"},
    )
    until = Moment(
        load_default=None,
        metadata={"description": "accepted before (RFC 3339, with a time zone)"},
    )
    limit = _page_size()
    cursor = OperationsCursor(
        load_default=None, metadata={"description": "next_cursor of the previous page"}
    )

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("Must be after since.", "until")


class AccountQuerySchema(PageQuerySchema):
    currency = fields.String(
        load_default=None,
        validate=validate.OneOf(
            sorted(ISO_4217_CODES), error="Must be an upper-case ISO 4217 currency code."
        ),
    )
    cursor = fields.String(
        load_default=None,
        validate=validate.Regexp(limits.identifier_pattern, error=pages.CURSOR_MESSAGE),
        metadata={"description": "next_cursor of the previous page"},
    )


class BalancesQuerySchema(StrictSchema):
    at = Moment(
        required=True,
        metadata={
            "description": "RFC 3339 date-time with a time zone, not in the future",
            "example": "2026-11-24T18:00:00Z",
        },
    )

    @validates("at")
    def _not_in_the_future(self, value: datetime, **_: Any) -> None:
        if value > datetime.now(UTC):
            raise ValidationError("Must not be in the future.")


class OperationPageSchema(Schema):
    items = fields.List(fields.Nested(OperationSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class AccountPageSchema(Schema):
    items = fields.List(fields.Nested(AccountSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class BalancesAtSchema(Schema):
    account_id = fields.String(required=True)
    posted = fields.Integer(required=True)
    held = fields.Integer(required=True)
    available = fields.Integer(required=True)
    at = fields.String(required=True, metadata={"description": "the moment asked, in UTC"})
