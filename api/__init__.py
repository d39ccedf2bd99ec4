"""The HTTP API: a thin Flask app that validates, records and enqueues operations."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from api import accounts, health, operations
from api.auth import require_token
from api.errors import register_error_handlers
from billing.bootstrap import Services
from billing.config import Settings

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.api_tokens:
        raise RuntimeError(
            "BILLING_API_TOKENS is empty: set at least one token (comma-separated) "
            "so the API can authenticate its clients."
        )
    app = Flask("billing")
    app.config.update(
        API_TITLE="Billing service",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
    )
    app.extensions["billing"] = services or Services(settings)
    api = Api(app)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.register_blueprint(accounts.blp)
    api.register_blueprint(operations.blp)
    app.register_blueprint(health.blp)
    app.before_request(lambda: require_token(settings.api_tokens))
    register_error_handlers(app)
    return app
