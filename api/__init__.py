"""The HTTP API: a thin Flask app that validates, records and enqueues operations."""

from __future__ import annotations

import gc

from flask import Flask
from flask_smorest import Api
from flask_swagger_ui import get_swaggerui_blueprint

from api import accounts, health, holds, observability, operations
from api.auth import require_token
from api.context import FastJSONProvider
from api.errors import register_error_handlers
from api.openapi import ContractPlugin, document_contract, document_pages, ecma_pattern
from billing import logs
from billing.adapters.database import cooperate_with_gevent
from billing.adapters.schemas import ErrorSchema
from billing.bootstrap import Services
from billing.config import Settings

API_VERSION = "1.0.0"
API_DESCRIPTION = (
    "A double-entry ledger of user balances. Amounts are JSON integers in minor units "
    "(cents). Operations are accepted at once (202) and applied by the workers: read the "
    "outcome with `GET /v1/operations/{operation_id}?wait=N`. Every `/v1` route needs "
    "`Authorization: Bearer <token>`; every error has the body "
    '`{"error": {"code", "message", "details"?}}`.'
)


class BillingApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, documenting the contract's error body on every operation."""

    ERROR_SCHEMA = ErrorSchema


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.api_tokens:
        raise RuntimeError(
            "BILLING_API_TOKENS is empty: set at least one token (comma-separated) "
            "so the API can authenticate its clients."
        )
    logs.configure("api", background=True)
    served_by_gevent = cooperate_with_gevent()
    app = Flask("billing")
    app.json = FastJSONProvider(app)
    app.config.update(
        API_TITLE="Billing service",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"info": {"description": API_DESCRIPTION}},
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
    )
    app.extensions["billing"] = services or Services(settings)
    api = BillingApi(app, spec_kwargs={"extra_plugins": [ContractPlugin()]})
    api.ma_plugin.converter.add_attribute_function(ecma_pattern)
    document_contract(api.spec)
    api.register_blueprint(accounts.blp)
    api.register_blueprint(operations.blp)
    api.register_blueprint(holds.blp)
    api.register_blueprint(health.blp)
    api.register_blueprint(observability.blp)
    # The API reference page, with Swagger UI's JavaScript and CSS served from the
    # flask-swagger-ui package itself, and no validator badge fetched from the internet:
    # it works with no internet access.
    docs = get_swaggerui_blueprint(
        "/docs", "/openapi.json", config={"app_name": "Billing API", "validatorUrl": None}
    )
    app.register_blueprint(docs)
    document_pages(
        api.spec, app, spec_endpoint="api-docs.openapi_json", docs_endpoint=f"{docs.name}.show"
    )
    observability.instrument(app)
    app.before_request(lambda: require_token(settings.api_tokens))
    register_error_handlers(app)
    if served_by_gevent:
        # What the app has built lives as long as the process: frozen, it is
        # no longer walked by each full collection, which took 46 ms of a
        # request now and then (a lone client's slowest answers).
        gc.freeze()
    return app
