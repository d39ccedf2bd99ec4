"""Requests only a raw socket can send get the contract's error body, never HTML or a 5xx.

gunicorn answers what it cannot parse (a garbled request line, one too long,
too many or too large headers) before the app sees it, and a chunked body
has no Content-Length for the size limit to check up front: each case is
sent byte for byte to the session's API under gunicorn.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from billing import limits
from tests.support.contract import ERROR_CODES


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The contract's error body, checked for its shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        document = json.loads(self.body)
        assert set(document) == {"error"}, document
        error = document["error"]
        assert set(error) <= {"code", "message", "details"}, error
        assert error["code"] in ERROR_CODES, error
        assert isinstance(error["message"], str) and error["message"], error
        return dict(error)


def exchange(api_url: str, head: bytes, body: Iterable[bytes] = ()) -> Answer:
    """Send the bytes (the body from a second thread) and read one answer.

    The server may answer and close before it has read the whole body; what it
    answered is read all the same (a reset after it is not an error here).
    """
    address = urlsplit(api_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head)

        def send_body() -> None:
            try:
                for part in body:
                    connection.sendall(part)
            except OSError:
                pass  # the server answered and closed before the rest

        sender = threading.Thread(target=send_body)
        sender.start()
        try:
            return read_answer(connection)
        finally:
            with contextlib.suppress(OSError):  # already closed by the server
                connection.shutdown(socket.SHUT_RDWR)
            sender.join(timeout=30)


def read_answer(connection: socket.socket) -> Answer:
    """One answer with a Content-Length, read until its body is complete or the server closes."""
    received = bytearray()
    status, headers, length = 0, {}, None
    while length is None or len(received) < length:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        received.extend(chunk)
        if not status and b"\r\n\r\n" in received:
            head, _, rest = bytes(received).partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers["content-length"])
            received = bytearray(rest)
    assert status, f"no complete answer: {bytes(received[:200])!r}"
    return Answer(status, headers, bytes(received))


def chunked(body: bytes, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), chunk_size):
        part = body[start : start + chunk_size]
        yield b"%x\r\n%s\r\n" % (len(part), part)
    yield b"0\r\n\r\n"


def post_head(settings: Any, path: str, *extra_headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        f"Authorization: Bearer {settings.api_tokens[0]}",
        "Content-Type: application/json",
        *extra_headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def padded_credit(size_bytes: int) -> bytes:
    """A credit body of exactly this many bytes (spaces before the closing brace)."""
    body = json.dumps({"operation_id": "padded", "account_id": "padded", "amount": 1}).encode()
    return body[:-1] + b" " * (size_bytes - len(body)) + b"}"


def test_a_chunked_body_over_the_size_limit_is_refused_with_413(
    api_url: str, settings: Any
) -> None:
    head = post_head(settings, "/v1/credits", "Transfer-Encoding: chunked")
    body = padded_credit(limits.request_body_bytes_max + 1)

    answer = exchange(api_url, head, chunked(body))

    assert answer.status == 413, answer
    assert answer.error()["code"] == "validation_error"


def test_a_body_with_a_content_length_over_the_size_limit_is_refused_with_413(
    api_url: str, settings: Any
) -> None:
    size = limits.request_body_bytes_max + 1
    head = post_head(settings, "/v1/credits", f"Content-Length: {size}")

    answer = exchange(api_url, head, [padded_credit(size)])

    assert answer.status == 413, answer
    assert answer.error()["code"] == "validation_error"


def test_a_chunked_body_at_the_size_limit_is_read_whole(api_url: str, settings: Any) -> None:
    head = post_head(settings, "/v1/credits", "Transfer-Encoding: chunked", "Connection: close")
    body = padded_credit(limits.request_body_bytes_max)

    answer = exchange(api_url, head, chunked(body))

    # Read whole and parsed: the operation is refused for its unknown account
    # only once applied, so it is accepted here.
    assert answer.status == 202, answer


# What gunicorn refuses before the app sees the request, with the status it answers.
UNPARSABLE = [
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="garbled_request_line"),
    pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, id="unknown_http_version"),
    pytest.param(
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="request_line_too_long"
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        id="header_too_long",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Header-%d: 1\r\n" % i for i in range(150))
        + b"\r\n",
        431,
        id="too_many_headers",
    ),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400, id="bad_header"),
    # gunicorn answers an unknown transfer coding 501; the contract has no 5xx
    # for a malformed request but 503.
    pytest.param(
        b"POST /v1/credits HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: zip\r\n\r\n",
        400,
        id="unknown_transfer_coding",
    ),
]


@pytest.mark.parametrize(("request_bytes", "status"), UNPARSABLE)
def test_a_request_gunicorn_cannot_parse_gets_the_contract_error_body(
    api_url: str, request_bytes: bytes, status: int
) -> None:
    answer = exchange(api_url, request_bytes)

    assert answer.status == status, answer
    assert answer.error()["code"] == "validation_error"


def test_a_chunked_body_with_a_garbled_chunk_size_is_a_validation_error_not_a_500(
    api_url: str, settings: Any
) -> None:
    head = post_head(settings, "/v1/credits", "Transfer-Encoding: chunked")

    answer = exchange(api_url, head, [b"zz\r\n{}\r\n0\r\n\r\n"])

    assert answer.status == 400, answer
    assert answer.error()["code"] == "validation_error"
