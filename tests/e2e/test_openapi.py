"""The OpenAPI document at /openapi.json: valid OpenAPI 3, every route of the app, the contract.

The document is read from the running API; the routes come from the same
app's url_map, so a route added without documentation fails here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from openapi_spec_validator import validate

from api import create_app
from billing.config import Settings
from tests.support import stack

# The contract's error codes, by HTTP status.
ERROR_CODES = {
    "401": {"unauthorized"},
    "404": {"not_found"},
    "409": {"idempotency_conflict", "account_conflict"},
    "422": {"validation_error"},
    "503": {"unavailable"},
}
# The POSTs whose 409 the contract names: the account conflict and the operations' idempotency.
CONFLICTING_POSTS = {
    "/v1/accounts": "account_conflict",
    "/v1/credits": "idempotency_conflict",
    "/v1/debits": "idempotency_conflict",
    "/v1/transfers": "idempotency_conflict",
    "/v1/holds": "idempotency_conflict",
    "/v1/holds/{hold_id}/capture": "idempotency_conflict",
    "/v1/holds/{hold_id}/release": "idempotency_conflict",
    "/v1/reversals": "idempotency_conflict",
}
UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def document(api_url: str) -> dict[str, Any]:
    response = requests.get(f"{api_url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[Flask]:
    # create_app sets up the API's JSON logging on the root logger; give pytest its own back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield create_app(settings)
    finally:
        root.handlers[:], root.level = handlers, level


def openapi_path(rule: str) -> str:
    """Flask's `/v1/accounts/<account_id>` is OpenAPI's `/v1/accounts/{account_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        section, kind, name = node["$ref"].removeprefix("#/").split("/")
        node = document[section][kind][name]
    return node


def documented_routes(app: Flask) -> dict[str, set[str]]:
    """The app's routes as OpenAPI paths and methods, less static files and the page's assets."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or (rule.rule.startswith("/docs/") and rule.arguments):
            continue
        methods = {m.lower() for m in (rule.methods or set()) - UNDOCUMENTED_METHODS}
        routes.setdefault(openapi_path(rule.rule), set()).update(methods)
    return routes


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_of_the_app_is_in_the_document_and_nothing_else(
    app: Flask, document: dict[str, Any]
) -> None:
    routes = documented_routes(app)
    assert {"/v1/credits", "/healthz", "/readyz", "/metrics", "/docs/", "/openapi.json"} <= set(
        routes
    )
    for path, methods in routes.items():
        assert path in document["paths"], f"{path} is not documented"
        assert methods <= set(document["paths"][path]), f"{path}: {methods} not all documented"
    assert set(document["paths"]) == set(routes), "the document has paths the app does not serve"


def test_every_v1_operation_needs_the_bearer_token_and_nothing_else_does(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in operations(document):
        expected = [{"bearer": []}] if path.startswith("/v1/") else None
        assert operation.get("security") == expected, f"{method} {path}"


def test_every_v1_operation_documents_the_contract_errors(document: dict[str, Any]) -> None:
    error_schema = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in operations(document):
        if not path.startswith("/v1/"):
            continue
        expected = {"401", "422", "503"}
        if method == "get" and "{" in path:
            expected.add("404")
        if method == "post" and path in CONFLICTING_POSTS:
            expected.add("409")
        responses = operation["responses"]
        assert expected <= set(responses), f"{method} {path}: {sorted(responses)}"
        for status in expected:
            content = resolve(document, responses[status])["content"]["application/json"]
            assert content["schema"] == error_schema, f"{method} {path} {status}"
            code = content["example"]["error"]["code"]
            assert code in ERROR_CODES[status], f"{method} {path} {status}: {code}"
        if "409" in expected:
            content = resolve(document, responses["409"])["content"]["application/json"]
            assert content["example"]["error"]["code"] == CONFLICTING_POSTS[path]
    error = document["components"]["schemas"]["Error"]
    detail = resolve(document, error["properties"]["error"])
    assert set(detail["required"]) == {"code", "message"}
    assert "details" in detail["properties"]


def request_bodies(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, method, operation in operations(document):
        if "requestBody" in operation:
            assert method == "post", f"{method} {path} has a body"
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            yield path, resolve(document, schema)


def test_every_request_body_field_has_an_example(document: dict[str, Any]) -> None:
    bodies = dict(request_bodies(document))
    assert {"/v1/accounts", "/v1/transfers", "/v1/holds/{hold_id}/capture"} <= set(bodies)
    for path, schema in bodies.items():
        for name, field in schema["properties"].items():
            assert "example" in field, f"{path}: {name} has no example"


def fresh(value: Any, new_id: Any) -> Any:
    """The example with its operation and account ids made unique to this test."""
    if isinstance(value, dict):
        return {
            key: new_id(item)
            if key.endswith(("operation_id", "account_id"))
            else fresh(item, new_id)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [fresh(item, new_id) for item in value]
    return value


def test_the_documented_examples_are_accepted_by_the_api(
    document: dict[str, Any], client: stack.Client, new_id: Any
) -> None:
    for n, (path, schema) in enumerate(request_bodies(document)):

        def unique(name: str, n: int = n) -> str:
            return str(new_id(f"{name}-{n}"))

        example = {name: field["example"] for name, field in schema["properties"].items()}
        url = re.sub(r"\{[^}]+\}", unique("path-id"), path)
        response = client.post(url, fresh(example, unique))
        assert response.status_code in (200, 201, 202), f"{path}: {response.text}"


def test_the_event_feed_documents_its_page_and_the_answer_for_pruned_events(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/v1/events"]["get"]
    parameters = {p["name"] for p in operation["parameters"]}
    assert parameters == {"after", "limit"}
    page = resolve(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(page["properties"]) == {"items", "next_after"}
    gone = resolve(document, operation["responses"]["410"])["content"]["application/json"]
    assert gone["example"]["error"]["code"] == "events_pruned"
