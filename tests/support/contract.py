"""Assertions on the shapes the contract promises, shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any

import requests

ERROR_CODES = {
    "validation_error",
    "unauthorized",
    "not_found",
    "idempotency_conflict",
    "account_conflict",
    "unavailable",
}


def assert_error(
    response: requests.Response, status: int, code: str, *fields: str
) -> dict[str, Any]:
    """The response is `{"error": {"code", "message", "details"?}}` naming every field given."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert code in ERROR_CODES
    assert isinstance(error["message"], str) and error["message"], error
    for field in fields:
        assert field in error.get("details", {}), error
    return dict(error)
