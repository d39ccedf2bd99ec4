"""One error body for every failure: `{"error": {"code", "message", "details"?}}`.

Flask's own 404 and 405, webargs' validation errors, bodies the JSON parser
refused (api/bodies.py), and the database or broker being down all end here,
so a client parses one shape.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from api.gunicorn_worker import MalformedFraming
from billing.ports import TransientError

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def validation_error(
    details: dict[str, Any], message: str = "The request is not valid."
) -> ApiError:
    return ApiError(422, "validation_error", message, details)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return jsonify({"error": body}), status, headers or {}


def _validation_details(messages: Any) -> Any:
    """webargs nests messages by location ({"json": {...}}); merge the locations."""
    if isinstance(messages, dict) and set(messages) <= {"json", "query", "view_args", "path"}:
        merged: dict[str, Any] = {}
        for location_messages in messages.values():
            if isinstance(location_messages, dict):
                merged.update(location_messages)
            else:
                merged["_body"] = location_messages
        return merged
    return messages


def handle_http_exception(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    if status in (400, 422):
        return error_response(
            422,
            "validation_error",
            "The request is not valid.",
            _validation_details(data.get("messages") or data.get("errors") or {}),
        )
    if status == 401:
        return error_response(
            401,
            "unauthorized",
            "A valid bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if status == 404:
        return error_response(404, "not_found", "No such resource.")
    if status == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        return error_response(
            405,
            "not_found",
            f"This resource has no such method; allowed: {allowed}.",
            headers={"Allow": allowed},
        )
    if status == 413:
        return error_response(413, "validation_error", "The request body is too large.")
    if status >= 500:
        log.error("unhandled server error", exc_info=error)
        return error_response(status, "internal_error", "An unexpected error occurred.")
    return error_response(status, "validation_error", error.description or error.name)


def handle_malformed_framing(error: Exception) -> ResponseReturnValue:
    """The body's framing broke while the app read it (gunicorn's answer to the same is a 400)."""
    log.info("malformed request body: %s", error)
    return error_response(400, "validation_error", "The request body's framing is malformed.")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> ResponseReturnValue:
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(TransientError)
    def handle_unavailable(error: TransientError) -> ResponseReturnValue:
        log.warning("dependency unavailable: %s", error)
        return error_response(
            503,
            "unavailable",
            "The service is temporarily unavailable; retry shortly.",
            headers={"Retry-After": "1"},
        )

    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(MalformedFraming, handle_malformed_framing)
