"""Accounts over HTTP: create, list, read, and the ledger entries of one account."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from api.bodies import Blueprint
from api.context import path_identifier, services
from api.errors import ApiError
from billing.adapters import reads, views
from billing.adapters.read_schemas import AccountPageSchema, AccountQuerySchema
from billing.adapters.schemas import (
    AccountCreateSchema,
    AccountSchema,
    EntryPageSchema,
    PageQuerySchema,
)
from billing.domain import NewAccount
from billing.service import Acceptance, open_account

blp = Blueprint("accounts", __name__, url_prefix="/v1/accounts", description="Accounts")


@blp.route("")
class Accounts(MethodView):
    @blp.arguments(AccountCreateSchema())
    @blp.response(201, AccountSchema)
    @blp.alt_response(
        200,
        schema=AccountSchema,
        description="The account already existed with the same currency, limit and metadata",
    )
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create an account (idempotent on the same currency, overdraft limit and metadata).

        The same account again (same currency, overdraft limit and metadata; a
        field left out counts as its default) answers 200 with the account as
        it stands. Other values for an existing `account_id` answer 409
        `account_conflict` and change nothing.
        """
        outcome, row = open_account(NewAccount(**body), services().uow())
        if outcome is Acceptance.conflict:
            raise ApiError(
                409,
                "account_conflict",
                f"account {body['account_id']} exists with another currency, overdraft limit "
                "or metadata",
            )
        return views.account_view(row), 201 if outcome is Acceptance.accepted else 200

    @blp.arguments(AccountQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, AccountPageSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The client accounts by account_id, optionally of one currency, with a cursor."""
        items, next_cursor = reads.list_accounts(
            services().engine, query["currency"], query["limit"], query["cursor"]
        )
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/<account_id>")
class Account(MethodView):
    @blp.response(200, AccountSchema)
    def get(self, account_id: str) -> dict[str, Any]:
        """Read an account's balances."""
        account = views.get_account(services().engine, path_identifier(account_id, "account_id"))
        if account is None:
            raise ApiError(404, "not_found", f"account {account_id} does not exist")
        return account


@blp.route("/<account_id>/entries")
class Entries(MethodView):
    @blp.arguments(PageQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, EntryPageSchema)
    def get(self, query: dict[str, Any], account_id: str) -> dict[str, Any]:
        """The account's ledger entries, newest first, with cursor pagination."""
        path_identifier(account_id, "account_id")
        engine = services().engine
        if views.get_account(engine, account_id) is None:
            raise ApiError(404, "not_found", f"account {account_id} does not exist")
        cursor = int(query["cursor"]) if query["cursor"] else None
        items, next_cursor = views.list_entries(engine, account_id, query["limit"], cursor)
        return {"items": items, "next_cursor": next_cursor}
