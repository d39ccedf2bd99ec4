"""Sending the same request from several threads at the same moment, to provoke races."""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests

from tests.support.stack import Client


def at_once(
    client: Client, count: int, send: Callable[[requests.Session], requests.Response]
) -> list[requests.Response]:
    """Call `send` from `count` threads released together by a barrier, one session each."""
    barrier = threading.Barrier(count, timeout=30)
    responses: list[requests.Response] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            with requests.Session() as session:
                session.headers.update(client.session.headers)
                barrier.wait()
                response = send(session)
            with lock:
                responses.append(response)
        except BaseException as error:
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(responses) == count
    return responses
