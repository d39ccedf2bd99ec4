"""The HTTP API: a thin Flask app that validates, records and enqueues operations."""

from __future__ import annotations

import gc

from flask import Flask, request
from flask_smorest import Api
from flask_swagger_ui import get_swaggerui_blueprint
from werkzeug.exceptions import RequestEntityTooLarge

from api import accounts, events, health, holds, observability, operations, reads
from api.auth import require_token
from api.context import FastJSONProvider
from api.errors import register_error_handlers
from api.openapi import ContractPlugin, document_contract, document_pages, ecma_pattern
from billing import limits, logs
from billing.adapters.database import cooperate_with_gevent
from billing.adapters.schemas import ErrorSchema
from billing.bootstrap import Services
from billing.config import Settings, api_tokens_problem

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


def refuse_a_streamed_body_over_the_limit() -> None:
    """413 for a body without a Content-Length (chunked) that goes on past the size limit.

    Werkzeug reads such a body up to MAX_CONTENT_LENGTH and stops there without
    a word, so the cut body would be judged as malformed JSON (422). One byte
    more from the server's own stream tells whether the body went on.
    """
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return
    body = request.get_data(cache=True)
    if len(body) >= limits.request_body_bytes_max and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    problem = api_tokens_problem(settings.api_tokens)
    if problem:
        raise RuntimeError(problem)
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
        MAX_CONTENT_LENGTH=limits.request_body_bytes_max,
    )
    app.extensions["billing"] = services or Services(settings)
    api = BillingApi(app, spec_kwargs={"extra_plugins": [ContractPlugin()]})
    api.ma_plugin.converter.add_attribute_function(ecma_pattern)
    document_contract(api.spec)
    api.register_blueprint(accounts.blp)
    api.register_blueprint(operations.blp)
    api.register_blueprint(holds.blp)
    api.register_blueprint(reads.blp)
    api.register_blueprint(events.blp)
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
    app.before_request(refuse_a_streamed_body_over_the_limit)
    register_error_handlers(app)
    if served_by_gevent:
        # What the app has built lives as long as the process: frozen, it is
        # no longer walked by each full collection, which took 46 ms of a
        # request now and then (a lone client's slowest answers).
        gc.freeze()
    return app
