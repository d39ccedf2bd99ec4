"""Parse JSON that comes from outside: bounded in size and depth, and no key given twice.

Every entrance (HTTP bodies and batches, AMQP intake messages, the
dead-letter tooling) parses with `parse`, so a text is refused the same way
wherever it arrives. A refusal is a `JsonRefused` (a ValueError) whose text
says why in one sentence, for the `validation_error` a client gets.

- Size: a text over the caller's limit is refused before anything else.
- Depth: the nesting is measured on the text before it is parsed (see
  `_deeper_than`), so a text nested 100,000 deep costs a scan of its bytes
  and never reaches a recursive parser, encoder or database.
- Repeated keys: `{"amount": 1, "amount": 1000}` is refused. With money an
  ambiguous request is not guessed at, and the standard library would keep
  the last value silently.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from billing import limits


class JsonRefused(ValueError):
    """A JSON text refused for its size, depth, encoding, syntax or a repeated key."""


def parse(text: bytes | str, *, bytes_max: int, depth_max: int = limits.json_depth_max) -> Any:
    """The value of a JSON text from outside, or JsonRefused saying why it is refused."""
    data = _utf8(text, bytes_max)
    if len(data) > bytes_max:
        raise JsonRefused(f"The JSON text is larger than {bytes_max} bytes.")
    if _deeper_than(data, depth_max):
        raise JsonRefused(f"The JSON text is nested more than {depth_max} levels deep.")
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise JsonRefused("The JSON text is not valid UTF-8.") from error
    except JsonRefused:
        raise
    # ValueError: bad syntax, or an integer longer than Python converts (4,300
    # digits). RecursionError cannot happen within the depth limit; it is
    # caught all the same so that no text can ever raise anything else.
    except (ValueError, RecursionError) as error:
        raise JsonRefused(f"The text is not valid JSON: {error}.") from error


def _utf8(text: bytes | str, bytes_max: int) -> bytes:
    if isinstance(text, bytes):
        return text
    if len(text) > bytes_max:  # a character is at least one byte: no need to encode it
        raise JsonRefused(f"The JSON text is larger than {bytes_max} bytes.")
    # A text that came decoded already may hold lone surrogates (from a
    # message's own content encoding); they pass here and fail as not UTF-8.
    return text.encode("utf-8", "surrogatepass")


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):  # only then is it worth finding which key it was
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRefused(f"The key {json.dumps(key)} is given more than once.")
            seen.add(key)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_repeated_keys)

# Keep only brackets and quotes; every opening bracket counts +1, closing -1.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_STEP = [0] * 256
for _opening in b"[{":
    _STEP[_opening] = 1
for _closing in b"]}":
    _STEP[_closing] = -1


def _deeper_than(data: bytes, depth_max: int) -> bool:
    """Whether the text's brackets, outside its strings, nest deeper than `depth_max`.

    Done with bytes methods that run in C, about a quarter of the time the
    parse itself takes: escaped backslashes and quotes go first (a run of
    backslashes pairs up from its left, so removing the pairs leaves exactly
    the escaping ones), then everything but brackets and quotes, then the
    strings (the parts between a quote and the next). What is left is the
    bracket structure, and its deepest point is the largest running sum.

    On a text that is not JSON the count may differ from any parse, but only
    past the first point where a parser stops with an error, so a parser
    never goes deeper than this counted.
    """
    if data.count(b"[") + data.count(b"{") <= depth_max:
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Adjacent quotes (an empty string, or the end of one and the start of the
    # next) hold no brackets, and removing them keeps every other quote's parity.
    kept = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    brackets = b"".join(kept.split(b'"')[::2])
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > depth_max
