"""The API's request lines: refusals and errors at INFO, other requests only at DEBUG."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from flask.testing import FlaskClient

from api import create_app
from billing.config import Settings
from tests.support import stack


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


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_a_decoded_path_cannot_forge_a_line_of_the_text_log(settings: Settings) -> None:
    port = stack.free_port()
    env = {**stack.environment(settings), "BILLING_LOG_FORMAT": "text"}
    command = [sys.executable, "-m", "billing.cli", "api", "--port", str(port), "--workers", "1"]
    api = stack.Process(f"api-text-{settings.amqp_prefix}", command, env)
    try:
        base = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: answers(f"{base}/healthz"), 30, "the API to start")
        forged = "2026-01-01 00:00:00,000 INFO api billing.api: GET /v1/admin 200"
        path = "/v1/operations/x" + quote(f"\n{forged}\r\u2028")
        token = {"Authorization": f"Bearer {settings.api_tokens[0]}"}
        assert requests.get(base + path, headers=token, timeout=10).status_code == 404

        def logged() -> list[str]:
            return [
                line
                for line in api.log_path.read_text(errors="replace").split("\n")
                if "GET /v1/operations/x" in line
            ]

        stack.wait_until(logged, 10, "the request's log line")
    finally:
        api.stop()
    (line,) = logged()
    assert line.endswith(" 404") and "\\n2026-01-01" in line, line
    assert not any(line.startswith(forged) for line in api.log_path.read_text().split("\n"))
