"""The OpenAPI document: the contract's error answers and bearer security on every `/v1` route.

flask-smorest documents each route from its marshmallow schemas. What is true
of every `/v1` route (a token is required, a malformed request is a 422, the
database or broker being down is a 503) is added here once, by an apispec
plugin, rather than repeated on each view; and the two routes flask-smorest
does not know (the document itself and the `/docs` page) are described too,
so the document covers every route of the app.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec, BasePlugin
from flask import Flask

from billing import limits
from billing.adapters.schemas import ErrorSchema

SECURITY_SCHEME = "bearer"

# Component name -> (description, error code, message, details): one example body each.
_ERRORS: dict[str, tuple[str, str, str, dict[str, Any] | None]] = {
    "Unauthorized": (
        "No valid `Authorization: Bearer <token>` header",
        "unauthorized",
        "A valid bearer token is required.",
        None,
    ),
    "NotFound": (
        "No such account or operation",
        "not_found",
        "account alice does not exist",
        None,
    ),
    "IdempotencyConflict": (
        "The operation_id was already used with another body or type",
        "idempotency_conflict",
        "operation op-1 was already submitted with another body",
        None,
    ),
    "AccountConflict": (
        "The account exists with another currency, overdraft limit or metadata",
        "account_conflict",
        "account alice exists with another currency, overdraft limit or metadata",
        None,
    ),
    "ValidationError": (
        "Malformed request: the offending fields are in details; a body that is not JSON, "
        f"nested more than {limits.json_depth_max} levels deep or with a key given twice in one "
        "object is refused as a whole, the reason under `_body`",
        "validation_error",
        "The request is not valid.",
        {"amount": ["Must be a JSON integer."], "colour": ["Unknown field."]},
    ),
    "EventsPruned": (
        "The events right after `after` are past the feed's retention (at least 30 days) and "
        "no longer kept; `details.retained_after` is the smallest `after` still served",
        "events_pruned",
        "the events after 0 are no longer kept; the feed is kept from after=1200",
        {"retained_after": 1200},
    ),
    "Unavailable": (
        "The database or the broker is unreachable; retry shortly (see Retry-After)",
        "unavailable",
        "The service is temporarily unavailable; retry shortly.",
        None,
    ),
}

# What any `/v1` request may get: no token, a malformed request, the database or broker down.
_EVERY_V1_OPERATION = {"401": "Unauthorized", "422": "ValidationError", "503": "Unavailable"}
# The routes whose 409 is not the idempotency conflict of an operation.
_CONFLICTS = {"/v1/accounts": "AccountConflict"}


class ContractPlugin(BasePlugin):
    """Adds bearer security and the contract's error answers to every `/v1` operation."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not path or not path.startswith("/v1/") or not operations:
            return
        for method, operation in operations.items():
            operation["security"] = [{SECURITY_SCHEME: []}]
            # Views give status codes as ints; one key per code in the document.
            answers = operation.get("responses", {})
            responses = {str(code): answer for code, answer in answers.items()}
            responses.update(_EVERY_V1_OPERATION)
            if method == "get" and "{" in path:
                responses["404"] = "NotFound"
            if method == "post" and path in _CONFLICTS:
                responses["409"] = _CONFLICTS[path]
            elif "409" in responses:
                # Every other 409 of the API is an operation_id used again with another body.
                responses["409"] = "IdempotencyConflict"
            operation["responses"] = responses


def ecma_pattern(_converter: Any, _field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    r"""Document Python's `\Z` (end of string) as ECMA-262's `$`, which OpenAPI patterns use.

    The validators anchor with `\Z` because Python's `$` also matches before a
    trailing newline; in ECMA-262 `\Z` is no anchor (it reads as a plain "Z"), and
    `$` without the multiline flag already means the end of the string.
    """
    pattern = ret.get("pattern")
    if isinstance(pattern, str) and pattern.endswith(r"\Z"):
        return {"pattern": pattern[:-2] + "$"}
    return {}


def document_contract(spec: APISpec) -> None:
    """Register the bearer security scheme and the error answers the plugin refers to."""
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the tokens in BILLING_API_TOKENS.",
        },
    )
    for name, (description, code, message, details) in _ERRORS.items():
        body: dict[str, Any] = {"code": code, "message": message}
        if details:
            body["details"] = details
        spec.components.response(
            name,
            {
                "description": description,
                "content": {
                    "application/json": {"schema": ErrorSchema, "example": {"error": body}}
                },
            },
        )


def document_pages(spec: APISpec, app: Flask, *, spec_endpoint: str, docs_endpoint: str) -> None:
    """Describe the document itself and the `/docs` page, which are not flask-smorest views."""
    pages = {
        spec_endpoint: ("This OpenAPI 3 document.", "application/json", {"type": "object"}),
        docs_endpoint: (
            "The browsable API reference (Swagger UI, its assets served by the service).",
            "text/html",
            {"type": "string"},
        ),
    }
    spec.tag({"name": "documentation", "description": "This document and its browsable page"})
    for rule in app.url_map.iter_rules():
        # The page's own assets (`/docs/<path>`) are files, not operations.
        if rule.endpoint not in pages or rule.arguments:
            continue
        summary, content_type, schema = pages[rule.endpoint]
        response = {"description": "OK", "content": {content_type: {"schema": schema}}}
        operation = {"summary": summary, "tags": ["documentation"], "responses": {"200": response}}
        spec.path(rule=rule, operations={"get": operation})
