"""The gunicorn worker the API runs in: gevent, with gunicorn's own refusals in the error body.

gunicorn answers a request it cannot parse (a garbled request line, one over
4094 bytes, too many or too large headers, an unknown transfer coding) by
itself, before the app sees it, with an HTML page; and its chunked-body
reader raises inside the app when a chunk is garbled. Clients of this API
parse one error body, `{"error": {"code", "message"}}`, and no malformed
request may get a 5xx but 503.

What this relies on (gunicorn 22 to 27, pinned in pyproject.toml;
tests/unit/test_gunicorn_worker.py fails when it moves): `Worker.handle_error`
decides the status, reason and message of such an answer and writes it with
`gunicorn.util.write_error(sock, status_int, reason, mesg)`, looked up on the
module each time; and every parse error is a `gunicorn.http.errors.ParseException`.
The worker process swaps that one function for `write_json_error`: gunicorn
still decides which status to send and logs as before.
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

from gunicorn import util
from gunicorn.http.errors import ParseException
from gunicorn.workers.ggevent import GeventWorker

# What the app's error handler catches when gunicorn's body reader finds the
# request's framing broken (a garbled chunk size) while the app reads it.
MalformedFraming = ParseException

# gunicorn answers an unknown transfer coding with 501, which says the server
# lacks a feature; for a client of this API it is a malformed request.
_STATUS_FOR_A_MALFORMED_REQUEST = {HTTPStatus.NOT_IMPLEMENTED.value: HTTPStatus.BAD_REQUEST.value}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, answering with the contract's error body."""
    status = _STATUS_FOR_A_MALFORMED_REQUEST.get(status_int, status_int)
    if status != status_int:
        reason = HTTPStatus(status).phrase
    code = "internal_error" if status >= 500 else "validation_error"
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorGeventWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, whose own error answers are the contract's error body."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
