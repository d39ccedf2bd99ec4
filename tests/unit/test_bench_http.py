"""The bench's HTTP client against a real socket server that answers as HTTP/1.1 allows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bench.http import HttpError, HttpPool


class Server:
    """Answers each request with what `reply` returns for it (None: close without answering)."""

    def __init__(self, reply: Callable[[bytes], bytes | None], close_after: bool = False) -> None:
        self._reply = reply
        self._close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        (
                            line.split(b":", 1)[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        b"0",  # a GET has no body
                    )
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self._reply(request)
                if answer is None:
                    break
                # Byte by byte, so the client sees every boundary a network may cut at.
                for index in range(len(answer)):
                    writer.write(answer[index : index + 1])
                    await writer.drain()
                if self._close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def post_all(
    server: Server, paths: list[str], size: int = 1, timeout_s: float = 5
) -> list[tuple[int, bytes] | HttpError]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = HttpPool(f"http://127.0.0.1:{port}/base/", {"X-Token": "t"}, size, timeout_s)
    results: list[tuple[int, bytes] | HttpError] = []
    try:
        for path in paths:
            try:
                results.append(await pool.post(path, b'{"a":1}'))
            except HttpError as error:
                results.append(error)
    finally:
        await pool.close()
        listener.close()
    return results


def run(coroutine: Awaitable[list[tuple[int, bytes] | HttpError]]) -> list:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_a_request_is_one_well_formed_post_and_connections_are_kept_alive() -> None:
    server = Server(lambda _: b"HTTP/1.1 202 ACCEPTED\r\nContent-Length: 2\r\n\r\nok")
    assert run(post_all(server, ["/v1/x", "/v1/y", "/v1/z"])) == [(202, b"ok")] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/v1/x HTTP/1.1\r\n")
    assert b"\r\nX-Token: t\r\n" in first
    assert b"\r\nContent-Length: 7\r\n\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a":1}')


def test_a_get_is_one_well_formed_request_without_a_body_on_the_same_connections() -> None:
    async def post_then_get(server: Server) -> list[tuple[int, bytes]]:
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = HttpPool(f"http://127.0.0.1:{port}/base/", {"X-Token": "t"}, 1, 5)
        try:
            return [await pool.post("/v1/x", b"{}"), await pool.get("/v1/y?a=1&b=%3A")]
        finally:
            await pool.close()
            listener.close()

    server = Server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert asyncio.run(post_then_get(server)) == [(200, b"ok")] * 2
    assert server.connections == 1
    get = server.requests[1]
    assert get.startswith(b"GET /base/v1/y?a=1&b=%3A HTTP/1.1\r\n")
    assert b"\r\nX-Token: t\r\n" in get
    assert get.endswith(b"\r\n\r\n") and b"Content-Length" not in get
    assert get.count(b"\r\n\r\n") == 1


def test_chunked_bodies_with_trailers_are_joined() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nTrailer: x\r\n\r\n"
    )
    plain_after = b"HTTP/1.1 201 CREATED\r\ncontent-length: 0\r\n\r\n"
    replies = iter([chunked, plain_after])
    server = Server(lambda _: next(replies))
    assert run(post_all(server, ["/a", "/b"])) == [(200, b"abcdefg"), (201, b"")]
    assert server.connections == 1


def test_connection_close_and_bodies_without_length_use_a_new_connection() -> None:
    replies = iter(
        [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ]
    )
    server = Server(lambda _: next(replies), close_after=True)
    assert run(post_all(server, ["/a", "/b", "/c"])) == [
        (200, b"a"),
        (200, b"until the end"),
        (200, b"c"),
    ]
    assert server.connections == 3


def test_no_answer_is_an_error_and_the_next_request_reconnects() -> None:
    replies = iter([None, b"HTTP/1.1 202 ACCEPTED\r\nContent-Length: 0\r\n\r\n"])
    server = Server(lambda _: next(replies))
    first, second = run(post_all(server, ["/a", "/b"]))
    assert isinstance(first, HttpError)
    assert second == (202, b"")
    assert server.connections == 2


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def scenario() -> tuple[list, int]:
        server = Server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = HttpPool(f"http://127.0.0.1:{port}", {}, 4, 5)
        try:
            first = await pool.post("/a", b"")
            for writer in server.writers:  # the server's keep-alive timeout
                writer.close()
            await asyncio.sleep(0.1)
            second = await pool.post("/b", b"")
        finally:
            await pool.close()
            listener.close()
        return [first, second], server.connections

    answers, connections = asyncio.run(scenario())
    assert answers == [(200, b"a"), (200, b"a")]
    assert connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "bad-length", "bad-chunk"],
)
def test_malformed_answers_are_errors(reply: bytes) -> None:
    server = Server(lambda _: reply)
    (result,) = run(post_all(server, ["/a"]))
    assert isinstance(result, HttpError)


def test_a_server_that_never_answers_times_out() -> None:
    async def scenario() -> object:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.sleep(5)
            writer.close()

        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = HttpPool(f"http://127.0.0.1:{port}", {}, 1, 0.2)
        try:
            return await pool.post("/a", b"")
        except HttpError as error:
            return error
        finally:
            await pool.close()
            listener.close()

    assert isinstance(asyncio.run(scenario()), HttpError)


def test_a_refused_connection_is_an_error() -> None:
    async def scenario() -> object:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        pool = HttpPool(f"http://127.0.0.1:{port}", {}, 1, 1)
        try:
            return await pool.post("/a", b"")
        except HttpError as error:
            return error

    assert isinstance(asyncio.run(scenario()), HttpError)


def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpPool("ftp://example.com", {}, 1, 1)
