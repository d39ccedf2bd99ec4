"""Reading the ledger over HTTP: operations by account, type, status and time, and an
account's balances at a moment. The list of accounts is a GET beside its POST (api/accounts.py).
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from api.bodies import Blueprint
from api.context import json_response, path_identifier, services
from api.errors import ApiError
from billing.adapters import reads
from billing.adapters.read_schemas import (
    BalancesAtSchema,
    BalancesQuerySchema,
    OperationPageSchema,
    OperationQuerySchema,
)
from billing.representation import render_operation

blp = Blueprint("reads", __name__, url_prefix="/v1", description="Reading the ledger")


@blp.route("/operations")
class Operations(MethodView):
    @blp.arguments(OperationQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, OperationPageSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """Operations newest first (by accepted_at), filtered by any combination, with a cursor.

        `account_id` finds every operation that involves the account: credits,
        debits and holds on it, transfers from or to it, holds that pay it,
        the captures, releases and expiries of its holds (as the hold's
        account or its destination), and operations of any other type that
        moved money on it. `since` is inclusive, `until` exclusive.
        """
        found = reads.OperationFilter(
            account_id=query["account_id"],
            type=query["type"],
            status=query["status"],
            since=query["since"],
            until=query["until"],
            after=query["cursor"],
        )
        records, next_cursor = reads.list_operations(services().engine, found, query["limit"])
        # Built in its documented shape (as GET /v1/operations/{id} answers each item).
        body = {"items": [render_operation(r) for r in records], "next_cursor": next_cursor}
        return json_response(body, 200)


@blp.route("/accounts/<account_id>/balances")
class BalancesAt(MethodView):
    @blp.arguments(BalancesQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, BalancesAtSchema)
    def get(self, query: dict[str, Any], account_id: str) -> dict[str, Any]:
        """The account's posted, held and available as they stood at `at`.

        After every entry at or before `at`; zeros before the account's first
        entry (an account opens empty, so also before it was created). `at`
        in the future is refused.
        """
        path_identifier(account_id, "account_id")
        balances = reads.balances_at(services().engine, account_id, query["at"])
        if balances is None:
            raise ApiError(404, "not_found", f"account {account_id} does not exist")
        return balances
