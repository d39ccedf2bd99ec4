"""What api/gunicorn_worker.py relies on in gunicorn still holds; its answers are the error body.

The worker swaps `gunicorn.util.write_error` for its own writer; these tests
fail when gunicorn stops writing its refusals through that function, or
stops raising parse errors as `ParseException`.
"""

from __future__ import annotations

import json
import logging
import socket
from types import SimpleNamespace

import pytest
from gunicorn import util
from gunicorn.http.errors import (
    InvalidChunkSize,
    InvalidRequestLine,
    LimitRequestHeaders,
    LimitRequestLine,
    UnsupportedTransferCoding,
)
from gunicorn.workers.base import Worker

from api.gunicorn_worker import MalformedFraming, write_json_error


def written_by_gunicorn(exc: Exception, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """What gunicorn's own `Worker.handle_error` hands to `util.write_error` for this error."""
    written: list[tuple[int, str]] = []
    monkeypatch.setattr(
        util, "write_error", lambda _sock, status, reason, _mesg: written.append((status, reason))
    )
    worker = SimpleNamespace(log=logging.getLogger("test.gunicorn"))
    Worker.handle_error(worker, None, None, ("127.0.0.1", 1), exc)
    return written


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        pytest.param(InvalidRequestLine("GARBAGE"), 400, id="garbled_request_line"),
        pytest.param(LimitRequestLine(5000, 4094), 414, id="request_line_too_long"),
        pytest.param(LimitRequestHeaders("too many"), 431, id="too_many_headers"),
        pytest.param(UnsupportedTransferCoding("zip"), 501, id="unknown_transfer_coding"),
    ],
)
def test_gunicorn_writes_its_refusals_through_util_write_error(
    exc: Exception, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [answer[0] for answer in written_by_gunicorn(exc, monkeypatch)] == [status]


def test_a_garbled_chunk_is_a_parse_exception() -> None:
    assert issubclass(InvalidChunkSize, MalformedFraming)


def answer_to(status: int, reason: str, mesg: str) -> tuple[str, dict[str, str], bytes]:
    server, client = socket.socketpair()
    with server, client:
        write_json_error(server, status, reason, mesg)
        server.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    assert int(headers["content-length"]) == len(body)
    return status_line, headers, body


def test_a_refusal_is_written_as_the_contract_error_body() -> None:
    status_line, headers, body = answer_to(414, "URI Too Long", "Request Line is too large")

    assert status_line == "HTTP/1.1 414 URI Too Long"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "validation_error",
            "message": "URI Too Long: Request Line is too large",
        }
    }


def test_an_unknown_transfer_coding_is_a_400_not_a_501() -> None:
    status_line, _, body = answer_to(501, "Bad Request", "Unsupported transfer coding: 'zip'")

    assert status_line == "HTTP/1.1 400 Bad Request"
    assert json.loads(body)["error"]["code"] == "validation_error"


def test_a_failure_of_the_server_itself_stays_a_500_in_the_error_body() -> None:
    status_line, _, body = answer_to(500, "Internal Server Error", "")

    assert status_line == "HTTP/1.1 500 Internal Server Error"
    assert json.loads(body) == {
        "error": {"code": "internal_error", "message": "Internal Server Error"}
    }
