"""Fast JSON for the ledger's own columns and events: orjson, with the standard library behind it.

Every operation's request, outcome and event is encoded once and decoded
about twice on its way through the database, which with the standard
library costs more CPU than the ledger arithmetic. orjson does the same
several times faster. orjson refuses integers beyond 64 bits when encoding
and reads them as floats when decoding, so a text with a run of 19 digits
or more (which account metadata may hold) goes through the standard
library instead, which keeps every integer exact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# int64 has 19 digits at most: a longer run may not fit, a run this long may not.
_LONG_NUMBER = re.compile(r"\d{19}")


def dumps(value: Any) -> str:
    """Compact JSON text, keys sorted, so the same value always gives the same text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def text_of(body: dict[str, Any] | str | None) -> str:
    """The JSON text of an event body; one read back from the outbox already is text."""
    assert body is not None, "an outcome event is rendered before it is published"
    return body if isinstance(body, str) else dumps(body)


def loads(text: str) -> Any:
    if _LONG_NUMBER.search(text):
        return json.loads(text)
    return orjson.loads(text)
