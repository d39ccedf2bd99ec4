"""Random values for the garbage test: bytes, JSON of any depth and size, hostile fields.

Everything is drawn from one `random.Random`, so a seed gives the same values
again. JSON deeper than Python's own encoder can write is built as text.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

ID_CHARS = string.ascii_letters + string.digits + "._:-"
# Characters a JSON string may carry that some layer may not: a NUL (PostgreSQL
# text and jsonb refuse it), a lone surrogate (UTF-8 cannot encode it), a
# right-to-left override, a line break (a forged log line).
AWKWARD_TEXT = ["\x00", "\ud800", "\udfff", "\u202e", "\n", "\r\n", "\u2028", "\ufeff", "é", "💸"]
AWKWARD_INTEGERS = [
    0,
    -1,
    -50,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**15,
    10**15 + 1,
    10**18,
    10**18 + 1,
    5 * 10**18,
    10**30,
    10**4000,
]
AWKWARD_FLOATS = [2.9, 10.0, -0.0, 1e-320, 1e308, float("inf"), float("-inf"), float("nan")]


def random_bytes(rng: random.Random, size_max: int) -> bytes:
    size = min(size_max, int(rng.expovariate(1 / 200)))
    if rng.random() < 0.3:
        return rng.randbytes(size)
    text = "".join(rng.choice(string.printable + "".join(AWKWARD_TEXT)) for _ in range(size))
    return text.encode("utf-8", errors="surrogatepass")


def random_text(rng: random.Random, length_max: int = 40) -> str:
    length = rng.randint(0, length_max)
    pool = rng.choice([string.ascii_letters, ID_CHARS, string.printable, "".join(AWKWARD_TEXT)])
    return "".join(rng.choice(pool) for _ in range(length))


def random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice(AWKWARD_INTEGERS)
    if kind == 1:
        return rng.randint(-(10**6), 10**6)
    if kind == 2:
        return rng.choice([*AWKWARD_FLOATS, rng.uniform(-1000000.0, 1000000.0)])
    if kind == 3:
        return rng.choice([True, False, None])
    return random_text(rng)


def random_json_value(rng: random.Random, budget: int, depth: int = 0) -> Any:
    """A random JSON value of roughly `budget` scalars, nested as deep as the budget allows."""
    if budget <= 1 or depth > 60 or rng.random() < 0.2:
        return random_scalar(rng)
    width = rng.randint(1, max(1, min(budget, 12)))
    share = max(1, budget // width)
    if rng.random() < 0.5:
        return [random_json_value(rng, share, depth + 1) for _ in range(width)]
    return {random_text(rng, 12): random_json_value(rng, share, depth + 1) for _ in range(width)}


def dump(value: Any) -> bytes:
    """JSON text as Python writes it: NaN and Infinity included, lone surrogates escaped."""
    return json.dumps(value).encode()


def deep_json(rng: random.Random, depth: int, core: bytes = b"1") -> bytes:
    """JSON nested `depth` levels deep in arrays and objects, built as text."""
    openers = []
    for _ in range(depth):
        openers.append(b"[" if rng.random() < 0.5 else b'{"k":')
    closers = [b"]" if o == b"[" else b"}" for o in reversed(openers)]
    return b"".join(openers) + core + b"".join(closers)


def random_identifier(rng: random.Random, prefix: str) -> str:
    """A well-formed identifier (1 to 64 characters of the allowed set) starting with `prefix`."""
    tail = "".join(rng.choice(ID_CHARS) for _ in range(rng.randint(1, 12)))
    return (prefix + tail)[:64]


def awkward_identifier(rng: random.Random, prefix: str) -> Any:
    """An identifier at or over its limits, of a wrong shape or type (never a good one)."""
    return rng.choice(
        [
            "",
            (prefix + "x" * 64)[:65],
            prefix + " space",
            prefix + "/slash",
            prefix + "é",
            prefix + "\x00",
            prefix + "\n",
            123,
            -1,
            2.5,
            None,
            True,
            [prefix],
            {"id": prefix},
            "x" * 10_000,
        ]
    )


def awkward_amount(rng: random.Random) -> Any:
    """An amount the contract refuses: zero, negative, over the maximum, not an integer."""
    return rng.choice(
        [
            0,
            -1,
            -50,
            -(10**15),
            10**15 + 1,
            5 * 10**18,
            2**63,
            2**64,
            10**30,
            2.9,
            10.0,
            -0.0,
            float("nan"),
            float("inf"),
            "100",
            "1e3",
            True,
            False,
            None,
            [100],
            {"value": 100},
        ]
    )
