"""The API's request lines: refusals and errors at INFO, other requests only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from api import create_app
from billing.config import Settings


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def requests(self) -> list[tuple[str, int]]:
        return [(r.getMessage(), r.levelno) for r in self.records]


def client_logging_at(
    settings: Settings, level: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FlaskClient, Lines]]:
    if level is None:
        monkeypatch.delenv("BILLING_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("BILLING_LOG_LEVEL", level)
    # create_app sets up the API's logging on the root logger; give pytest its own back.
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    lines = Lines()
    request_log = logging.getLogger("billing.api")
    request_log.addHandler(lines)
    try:
        yield create_app(settings).test_client(), lines
    finally:
        request_log.removeHandler(lines)
        root.handlers[:], root.level = handlers, root_level


@pytest.fixture
def default_level(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FlaskClient, Lines]]:
    yield from client_logging_at(settings, None, monkeypatch)


@pytest.fixture
def debug_level(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FlaskClient, Lines]]:
    yield from client_logging_at(settings, "debug", monkeypatch)


def test_by_default_a_refused_request_is_logged_and_an_answered_one_is_not(
    settings: Settings, default_level: tuple[FlaskClient, Lines]
) -> None:
    client, lines = default_level
    token = {"Authorization": f"Bearer {settings.api_tokens[0]}"}

    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/operations/no-such-operation", headers=token).status_code == 404

    assert lines.requests() == [("GET /v1/operations/no-such-operation 404", logging.INFO)]


def test_at_debug_every_request_is_logged(
    settings: Settings, debug_level: tuple[FlaskClient, Lines]
) -> None:
    client, lines = debug_level

    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/operations/x").status_code == 401

    assert lines.requests() == [
        ("GET /healthz 200", logging.DEBUG),
        ("GET /v1/operations/x 401", logging.INFO),
    ]
