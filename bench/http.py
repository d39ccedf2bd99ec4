"""A small HTTP/1.1 client for the bench: keep-alive connections, one request at a time on each.

The bench shares the machine's two cores with the service it measures, and
a general-purpose client costs more per request than the bench can afford:
aiohttp spent about 0.15 ms of CPU on each single-operation POST (request
objects, header multidicts, stream readers, a timer context per request).
This one writes each request as one pre-built byte string, reads only the
status line and the headers that frame the body (Content-Length, chunked
transfer encoding, Connection: close), and keeps the connections of a pool
that never holds more than `size` of them.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

_HEADER_END = b"\r\n\r\n"
_CRLF = b"\r\n"


class HttpError(Exception):
    """The request got no complete answer: refused, reset, closed early, malformed or timed out."""


class _Answer:
    """Parses one response out of the bytes a connection receives."""

    __slots__ = ("_chunks", "_headers_done", "body", "chunked", "keep_alive", "length", "status")

    def __init__(self) -> None:
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body = b""
        self._chunks: list[bytes] = []
        self._headers_done = False

    def feed(self, buffer: bytearray, closed: bool) -> bool:
        """Consume what `buffer` holds of this answer; True once it is complete."""
        if not self._headers_done:
            end = buffer.find(_HEADER_END)
            if end < 0:
                if closed:
                    raise HttpError("connection closed before the response headers")
                return False
            self._read_headers(bytes(buffer[:end]))
            del buffer[: end + len(_HEADER_END)]
            self._headers_done = True
        if self.chunked:
            return self._feed_chunks(buffer, closed)
        if self.length is not None:
            if len(buffer) < self.length:
                if closed:
                    raise HttpError("connection closed inside the response body")
                return False
            self.body = bytes(buffer[: self.length])
            del buffer[: self.length]
            return True
        # Neither a length nor chunks: the body runs until the server closes.
        self.keep_alive = False
        if not closed:
            return False
        self.body = bytes(buffer)
        buffer.clear()
        return True

    def _read_headers(self, head: bytes) -> None:
        lines = head.split(_CRLF)
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit():
                    raise HttpError(f"bad Content-Length: {value[:40]!r}")
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = value.endswith(b"chunked")
            elif name == b"connection":
                if value == b"close":
                    self.keep_alive = False
                elif value == b"keep-alive":
                    self.keep_alive = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0

    def _feed_chunks(self, buffer: bytearray, closed: bool) -> bool:
        while True:
            line_end = buffer.find(_CRLF)
            if line_end < 0:
                break
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size: {size_text[:40]!r}") from None
            if size == 0:
                # The last chunk, then optional trailers, then an empty line.
                trailer_end = buffer.find(_HEADER_END, line_end)
                if trailer_end < 0:
                    break
                del buffer[: trailer_end + len(_HEADER_END)]
                self.body = b"".join(self._chunks)
                return True
            chunk_end = line_end + 2 + size
            if len(buffer) < chunk_end + 2:
                break
            self._chunks.append(bytes(buffer[line_end + 2 : chunk_end]))
            del buffer[: chunk_end + 2]
        if closed:
            raise HttpError("connection closed inside a chunked body")
        return False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._answer: _Answer | None = None
        self._waiter: asyncio.Future[_Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._advance(closed=False)

    def eof_received(self) -> bool:
        self._advance(closed=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._advance(closed=True)
        self._fail(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    def request(self, data: bytes) -> asyncio.Future[_Answer]:
        assert self.transport is not None and self._waiter is None
        self._answer = _Answer()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _advance(self, closed: bool) -> None:
        answer, waiter = self._answer, self._waiter
        if answer is None or waiter is None:
            if self._buffer:  # bytes nobody asked for: the connection cannot be trusted
                self.close()
            return
        try:
            complete = answer.feed(self._buffer, closed)
        except HttpError as error:
            self._fail(error)
            self.close()
            return
        if complete:
            self._answer = self._waiter = None
            if not waiter.done():
                waiter.set_result(answer)

    def _fail(self, error: HttpError) -> None:
        waiter, self._answer, self._waiter = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class HttpPool:
    """POSTs and GETs to one origin over at most `size` keep-alive connections."""

    def __init__(self, url: str, headers: dict[str, str], size: int, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._base_path = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"Host: {host_header}"] + [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """The answer's status and body; HttpError when none came whole."""
        data = b"".join(
            (
                f"POST {self._base_path}{path} HTTP/1.1\r\n".encode("latin-1"),
                self._head,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        return await self._exchange(data)

    async def get(self, path: str) -> tuple[int, bytes]:
        """The answer's status and body to a GET of `path` (with its query)."""
        data = f"GET {self._base_path}{path} HTTP/1.1\r\n".encode("latin-1") + self._head + b"\r\n"
        return await self._exchange(data)

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        async with self._slots:
            connection = await self._connection()
            loop = asyncio.get_running_loop()
            waiter = connection.request(data)
            timer = loop.call_later(self._timeout_s, _expire, waiter)
            try:
                answer = await waiter
            except BaseException:
                self._discard(connection)
                raise
            finally:
                timer.cancel()
            if answer.keep_alive and not connection.closed:
                self._idle.append(connection)
            else:
                self._discard(connection)
            return answer.status, answer.body

    async def close(self) -> None:
        for connection in list(self._open):
            self._discard(connection)
        # Let the transports run their close callbacks before the loop ends.
        await asyncio.sleep(0)

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl),
                self._timeout_s,
            )
        except (OSError, TimeoutError) as error:
            raise HttpError(f"could not connect to {self._host}:{self._port}: {error}") from error
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)


def _expire(waiter: asyncio.Future[_Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError("no answer in time"))
