"""The bench's HTTP side: a pool of keep-alive connections, and the tally of what was sent.

The bench's own HTTP client (`bench.http`) on one asyncio loop, JSON
through orjson, and the body of a single 202 left unparsed: the load
generator shares the machine with the service, so every request should cost
it as little as possible (in batch runs the standard library's decoder
took 8% of the bench's CPU, reading the answers).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.http import HttpError, HttpPool
from bench.workload import Submission

request_timeout_s = 30
submit_attempts_max = 3
retry_pause_s = 0.2
BATCH_PATH = "/v1/operations/batch"
TRANSPORT_ERROR = "transport"
ACCEPTED_RESULTS = ("accepted", "repeated")


@dataclass
class Tally:
    """What the run sent and how the service answered, by operation id and by code."""

    sent: int = 0
    requests: int = 0
    accepted_at: dict[str, float] = field(default_factory=dict)
    # When the POST that carried each accepted operation was sent (time.monotonic).
    sent_at: dict[str, float] = field(default_factory=dict)
    # How long each POST took to be answered, in seconds, retries included.
    post_s: list[float] = field(default_factory=list)
    # Operations refused at submission, by error code or batch item result.
    rejected: Counter[str] = field(default_factory=Counter)
    # Requests answered with anything but 2xx, by HTTP status (or "transport").
    http_errors: Counter[str] = field(default_factory=Counter)

    def accept(self, operation_id: str, at: float, sent_at: float | None = None) -> None:
        self.accepted_at.setdefault(operation_id, at)
        if sent_at is not None:
            self.sent_at.setdefault(operation_id, sent_at)


class Api:
    """POSTs JSON to the service with the bench's token, retrying what is safe to retry.

    A retry reuses the operation id, so the service answers it with 200
    (already accepted) rather than accepting it twice.
    """

    def __init__(self, url: str, token: str, concurrency: int) -> None:
        try:
            self._pool = HttpPool(
                url,
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                concurrency,
                request_timeout_s,
            )
        except ValueError as error:
            raise SetupError(str(error)) from error

    async def close(self) -> None:
        await self._pool.close()

    async def post(self, path: str, body: Any) -> tuple[str, bytes]:
        """The answer's status ("202", ..., or "transport") and body, after safe retries."""
        payload = orjson.dumps(body)
        status, answer = TRANSPORT_ERROR, b""
        for attempt in range(submit_attempts_max):
            if attempt:
                await asyncio.sleep(retry_pause_s * attempt)
            try:
                code, answer = await self._pool.post(path, payload)
                status = str(code)
            except HttpError:
                status, answer = TRANSPORT_ERROR, b""
            if status not in (TRANSPORT_ERROR, "503"):
                break
        return status, answer

    async def get(self, path: str) -> tuple[str, bytes]:
        """The answer's status ("200", ..., or "transport") and body; a read is not retried."""
        try:
            code, answer = await self._pool.get(path)
        except HttpError:
            return TRANSPORT_ERROR, b""
        return str(code), answer


async def submit_one(api: Api, tally: Tally, submission: Submission) -> None:
    sent_at = time.monotonic()
    status, answer = await api.post(submission.http_path(), submission.http_body())
    answered_at = time.monotonic()
    tally.requests += 1
    tally.post_s.append(answered_at - sent_at)
    if status in ("200", "202"):
        tally.accept(submission.operation_id, answered_at, sent_at)
        return
    tally.http_errors[status] += 1
    tally.rejected[error_code(answer, status)] += 1


async def submit_batch(api: Api, tally: Tally, submissions: list[Submission]) -> None:
    """Submit through the batch endpoint; each item is accepted or refused on its own."""
    sent_at = time.monotonic()
    status, answer = await api.post(BATCH_PATH, {"operations": [s.message() for s in submissions]})
    answered_at = time.monotonic()
    tally.requests += 1
    tally.post_s.append(answered_at - sent_at)
    if status not in ("200", "202"):
        tally.http_errors[status] += 1
        tally.rejected[error_code(answer, status)] += len(submissions)
        return
    for item in orjson.loads(answer)["items"]:
        if item["result"] in ACCEPTED_RESULTS:
            tally.accept(item["operation_id"], answered_at, sent_at)
        else:
            tally.rejected[str(item["result"])] += 1


def error_code(answer: bytes, status: str) -> str:
    """The `error.code` of an error body, or the HTTP status when there is none."""
    try:
        return str(orjson.loads(answer)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"


async def create_account(api: Api, account_id: str) -> None:
    status, answer = await api.post("/v1/accounts", {"account_id": account_id, "currency": "USD"})
    if status not in ("200", "201"):
        answered = "no answer" if status == TRANSPORT_ERROR else f"{status} {answer[:200]!r}"
        raise SetupError(f"could not create account {account_id}: {answered}")


async def batch_endpoint_available(api: Api) -> bool:
    """Whether the service has the batch endpoint: an empty batch is refused, not unknown."""
    status, _ = await api.post(BATCH_PATH, {"operations": []})
    return status not in ("404", "405")


class SetupError(Exception):
    """The bench could not prepare its accounts; nothing was measured."""
