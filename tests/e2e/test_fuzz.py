"""Fuzzing the HTTP API from its own OpenAPI document (schemathesis).

Every generated request, valid (positive) or not (negative), must get an
answer the document describes, and never a 5xx (the API is healthy here, so
not even a 503).
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

# The API refuses some bodies that the document cannot describe as invalid
# (metadata jsonb cannot store, ids of a pattern JSON Schema reads differently),
# so a schema-valid request answered 422 is not a failure here; every other
# check (status, headers, content type, response bodies, no 5xx) applies.
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.stack import Client

EXAMPLES_PER_OPERATION = 35
# gunicorn itself refuses an over-long request line or header before the app
# sees it, with its own plain-text page; that is the HTTP server's limit, not
# an answer of the API, so it is not checked against the document.
GUNICORN_REFUSALS = {414, 431}
REQUESTS_MIN = 1_000


def test_generated_requests_get_documented_answers_and_no_server_error(
    api_url: str, client: Client, metrics: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    headers = {"Authorization": str(client.session.headers["Authorization"])}
    sent: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            response = case.call(base_url=api_url, headers=headers)
            if response.status_code not in GUNICORN_REFUSALS:
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            sent[case.operation.label] = sent.get(case.operation.label, 0) + 1
            assert response.status_code < 500, response.text

        try:
            call()
        except Unsatisfiable:
            # An operation whose inputs cannot be wrong (no body, no parameters)
            # has no negative cases to generate.
            assert mode is GenerationMode.NEGATIVE, operation.label
    total = sum(sent.values())
    metrics["fuzz"] = f"{total} generated requests over {len(sent)} operations"
    assert total >= REQUESTS_MIN, sent
