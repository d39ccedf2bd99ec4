"""The API's JSON provider gives the same answers as Flask's own, faster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from api.context import FastJSONProvider

COMPACT = {"separators": (",", ":")}


@pytest.mark.parametrize(
    "body",
    [
        {"operation_id": "t1", "amount": 5, "balances": {"b": {"held": 0}, "a": {"held": 1}}},
        {"big": 2**70, "list": [None, True, 1.5]},
        {"at": datetime(2026, 11, 30, tzinfo=UTC), "amount": Decimal("1.50")},
        [{"error": {"code": "validation_error", "details": {"amount": ["bad"]}}}],
    ],
    ids=["operation", "beyond-64-bits", "date-and-decimal", "list"],
)
def test_compact_answers_are_the_text_flask_would_send(body: Any) -> None:
    app = Flask("test")
    assert FastJSONProvider(app).dumps(body, **COMPACT) == DefaultJSONProvider(app).dumps(
        body, **COMPACT
    )


def test_request_bodies_keep_every_integer_exact_and_refuse_broken_json() -> None:
    provider = FastJSONProvider(Flask("test"))
    assert provider.loads(b'{"amount": 123456789012345678901234}') == {
        "amount": 123456789012345678901234
    }
    assert provider.loads('{"amount": 5}') == {"amount": 5}
    with pytest.raises(ValueError):
        provider.loads(b'{"amount": ')


def test_request_bodies_with_a_repeated_key_or_too_deep_are_refused() -> None:
    provider = FastJSONProvider(Flask("test"))
    with pytest.raises(ValueError, match="given more than once"):
        provider.loads(b'{"amount": 1, "amount": 1000}')
    with pytest.raises(ValueError, match="levels deep"):
        provider.loads(b"[" * 1000 + b"]" * 1000)
