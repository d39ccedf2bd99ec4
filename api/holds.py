"""Holds over HTTP: block money, capture it (in part) or release it, list an account's holds."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from api.bodies import Blueprint
from api.context import path_identifier, services
from api.errors import ApiError
from api.operations import register_operation_route
from billing.adapters import views
from billing.adapters.schemas import (
    CaptureSchema,
    HoldCreateSchema,
    HoldPageSchema,
    HoldQuerySchema,
    ReleaseSchema,
)
from billing.domain import OperationType
from billing.service import render_hold

blp = Blueprint("holds", __name__, url_prefix="/v1", description="Holds and two-phase transfers")

register_operation_route(blp, "/holds", OperationType.hold, HoldCreateSchema)
register_operation_route(
    blp, "/holds/<hold_id>/capture", OperationType.capture, CaptureSchema, path_field="hold_id"
)
register_operation_route(
    blp, "/holds/<hold_id>/release", OperationType.release, ReleaseSchema, path_field="hold_id"
)


@blp.route("/accounts/<account_id>/holds")
class AccountHolds(MethodView):
    @blp.arguments(HoldQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, HoldPageSchema)
    def get(self, query: dict[str, Any], account_id: str) -> dict[str, Any]:
        """The account's holds, newest first, optionally by status."""
        path_identifier(account_id, "account_id")
        engine = services().engine
        if views.get_account(engine, account_id) is None:
            raise ApiError(404, "not_found", f"account {account_id} does not exist")
        cursor = int(query["cursor"]) if query["cursor"] else None
        items, next_cursor = views.list_holds(
            engine, account_id, query["status"], query["limit"], cursor
        )
        return {"items": [render_hold(h) for h in items], "next_cursor": next_cursor}
