"""The bench's read mix: readers that search the ledger beside the write load.

Each reader is a closed loop: it sends its next read once the previous one
is answered, drawing the kind round the mix in turn (so every kind is
measured as often), on the run's own accounts and operations. The kinds are
the read API's: an account's operations (first page, and the page after
it through its cursor), the newest operations of a type and status, a page
of accounts, an account's balances at a moment of the last minute, and one
operation by id. Each read's time to its answer is kept by kind.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import orjson

READ_KINDS = (
    "operations_by_account",
    "operations_by_account_next_page",
    "operations_by_type",
    "accounts",
    "balances_at",
    "operation",
)
read_page_size = 20
# The bench client's GET: the answer's status ("200", ..., "transport") and body.
Getter = Callable[[str], Awaitable[tuple[str, bytes]]]
# balances?at= asks for a moment this far back at most.
balances_lookback_s = 60


@dataclass
class ReadTally:
    """How long each read took, by kind, and the reads that failed, by kind and status."""

    read_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)

    def answered(self, kind: str, status: str, took_s: float) -> None:
        if status == "200":
            self.read_s[kind].append(took_s)
        else:
            self.errors[f"{kind} {status}"] += 1


class ReadMix:
    """Draws the reads: their kind in turn, the account, the moment and the operation at random."""

    def __init__(
        self, account_ids: list[str], last_operation_id: Callable[[], str | None], seed: int | None
    ) -> None:
        self._account_ids = account_ids
        self._last_operation_id = last_operation_id
        self._rng = random.Random(seed)
        self._turn = 0

    def next_kind(self) -> str:
        # A next page follows its first page: it is not drawn on its own.
        kinds = [k for k in READ_KINDS if k != "operations_by_account_next_page"]
        kind = kinds[self._turn % len(kinds)]
        self._turn += 1
        return kind

    def path(self, kind: str, now: datetime | None = None) -> str | None:
        """The path and query of a read of this kind; None when there is nothing to read yet."""
        account_id = self._rng.choice(self._account_ids)
        if kind == "operations_by_account":
            return _with_query(
                "/v1/operations", {"account_id": account_id, "limit": read_page_size}
            )
        if kind == "operations_by_type":
            query = {"type": "transfer", "status": "succeeded", "limit": read_page_size}
            return _with_query("/v1/operations", query)
        if kind == "accounts":
            return _with_query("/v1/accounts", {"cursor": account_id, "limit": read_page_size})
        if kind == "balances_at":
            back_s = self._rng.uniform(0, balances_lookback_s)
            moment = (now or datetime.now(UTC)) - timedelta(seconds=back_s)
            return _with_query(
                f"/v1/accounts/{quote(account_id)}/balances",
                {"at": moment.isoformat(timespec="microseconds")},
            )
        if kind == "operation":
            operation_id = self._last_operation_id()
            return f"/v1/operations/{quote(operation_id)}" if operation_id else None
        raise ValueError(f"unknown read kind {kind!r}")


def next_page_path(first_path: str, answer: bytes) -> str | None:
    """The path of the page after an answered list page, or None when it was the last."""
    try:
        cursor = orjson.loads(answer).get("next_cursor")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(cursor, str):
        return None
    return f"{first_path}&{urlencode({'cursor': cursor})}"


def _with_query(path: str, query: dict[str, object]) -> str:
    return f"{path}?{urlencode(query)}"


async def read_loop(get: Getter, mix: ReadMix, tally: ReadTally, until: Callable[[], bool]) -> None:
    """One reader: reads one after another until `until()` says the load is over."""
    while not until():
        kind = mix.next_kind()
        path = mix.path(kind)
        if path is None:
            await _pause()
            continue
        status, answer = await _timed(get, kind, path, tally)
        if kind == "operations_by_account" and status == "200":
            following = next_page_path(path, answer)
            if following is not None:
                await _timed(get, "operations_by_account_next_page", following, tally)


async def _timed(get: Getter, kind: str, path: str, tally: ReadTally) -> tuple[str, bytes]:
    started = time.monotonic()
    status, answer = await get(path)
    tally.answered(kind, status, time.monotonic() - started)
    return status, answer


async def _pause() -> None:
    await asyncio.sleep(0.01)
