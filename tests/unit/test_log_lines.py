"""A log record is one line whatever text it carries: client input cannot forge another line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from billing.logs import JsonFormatter, TextFormatter

# A path as the API logs it once decoded: `/v1/accounts/x%0a2026-01-01 ... INFO ...`.
FORGERIES = [
    pytest.param("x\n2026-01-01 00:00:00 INFO api billing.api: GET /admin 200", id="line_feed"),
    pytest.param("x\r\n2026-01-01 forged", id="carriage_return_line_feed"),
    pytest.param("x\rforged over the start", id="carriage_return"),
    pytest.param("x\x1b[2K\x1b[1Gforged", id="terminal_escape"),
    pytest.param("x\x85forged", id="next_line"),
    pytest.param("x\u2028forged", id="line_separator"),
    pytest.param("x\u2029forged", id="paragraph_separator"),
    pytest.param("x\x0b\x0cforged", id="vertical_tab_and_form_feed"),
    pytest.param("x\x00forged", id="nul"),
]


def record(path: str, exc_info: object = None) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": "billing.api",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "%s %s %s",
            "args": ("GET", path, 404),
            "exc_info": exc_info,
        }
    )


def has_no_line_break_or_control(text: str) -> bool:
    return len(text.splitlines()) == 1 and not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text
    )


@pytest.mark.parametrize("path", FORGERIES)
def test_a_text_line_escapes_control_characters_of_the_message(path: str) -> None:
    line = TextFormatter("api").format(record(f"/v1/accounts/{path}"))

    assert has_no_line_break_or_control(line), repr(line)
    assert line.endswith(" 404")


@pytest.mark.parametrize("path", FORGERIES)
def test_a_json_line_escapes_every_line_break_and_control_character(path: str) -> None:
    line = JsonFormatter("api").format(record(f"/v1/accounts/{path}"))

    assert has_no_line_break_or_control(line), repr(line)
    assert json.loads(line)["message"] == f"GET /v1/accounts/{path} 404"


def test_an_escaped_text_line_tells_a_backslash_in_the_path_from_an_escape() -> None:
    forged = TextFormatter("api").format(record("/a\nb"))
    literal = TextFormatter("api").format(record("/a\\nb"))

    assert forged != literal
    assert forged.endswith("GET /a\\nb 404") or forged.endswith("GET /a\\x0ab 404")


def test_an_exception_traceback_keeps_its_lines_after_the_escaped_message() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    text = TextFormatter("api").format(record("/x\ny", exc_info))

    first, *traceback = text.splitlines()
    assert first.endswith(" 404") and "\\" in first
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: boom"
