"""JSON from outside is parsed within its size and depth limits, and no key is taken twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import limits
from billing.untrusted_json import JsonRefused, _deeper_than, parse

BYTES_MAX = 1_000_000


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_plain_object_is_parsed_with_every_integer_exact() -> None:
    text = b'{"amount": 123456789012345678901234, "ids": ["a", "b"], "ok": true}'
    assert parse(text, bytes_max=BYTES_MAX) == {
        "amount": 123456789012345678901234,
        "ids": ["a", "b"],
        "ok": True,
    }


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param(b'{"amount": 1, "amount": 1000}', "amount", id="top_level"),
        pytest.param(b'[{"a": 1}, {"b": {"c": 1, "c": 1}}]', "c", id="nested_in_an_array"),
        pytest.param(b'{"a": 1, "\\u0061": 2}', "a", id="the_same_key_escaped"),
    ],
)
def test_a_key_given_twice_is_refused_naming_it(text: bytes, key: str) -> None:
    with pytest.raises(JsonRefused, match=f'The key "{key}" is given more than once'):
        parse(text, bytes_max=BYTES_MAX)


def test_nesting_to_the_limit_is_parsed_and_one_level_more_is_refused() -> None:
    depth = limits.json_depth_max
    assert parse(nested_arrays(depth), bytes_max=BYTES_MAX) is not None
    objects = b'{"a": ' * depth + b"1" + b"}" * depth
    assert parse(objects, bytes_max=BYTES_MAX) is not None
    for text in (nested_arrays(depth + 1), b'{"a": ' * (depth + 1) + b"1" + b"}" * (depth + 1)):
        with pytest.raises(JsonRefused, match=f"more than {depth} levels"):
            parse(text, bytes_max=BYTES_MAX)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"[" * 100_000, id="100000_opened_never_closed"),
        pytest.param(nested_arrays(1000), id="1000_deep"),
        pytest.param(b'{"a": [' * 5000, id="objects_and_arrays_unclosed"),
    ],
)
def test_deep_nesting_is_refused_before_any_parse(text: bytes) -> None:
    with pytest.raises(JsonRefused, match="levels deep"):
        parse(text, bytes_max=BYTES_MAX)


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting() -> None:
    inside = "[" * 100 + '\\"[[[' + "\\\\" + "{" * 100
    text = json.dumps({"note": inside, "list": [[["x\\", '"[']]]}).encode()
    assert parse(text, bytes_max=BYTES_MAX)["note"] == inside


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'{"amount": ', id="truncated"),
        pytest.param(b'{"amount": "\xff"}', id="invalid_utf8"),
        pytest.param('{"note": "\ud800"}', id="a_lone_surrogate_in_decoded_text"),
        pytest.param(b'{"amount": 1' + b"0" * 5000 + b"}", id="an_integer_of_5001_digits"),
        pytest.param(b"", id="empty"),
    ],
)
def test_text_that_is_not_json_is_refused_as_such(text: bytes | str) -> None:
    with pytest.raises(JsonRefused):
        parse(text, bytes_max=BYTES_MAX)


@pytest.mark.parametrize("text", [b"[" + b"1," * 60 + b"1]", "[" + "1," * 60 + "1]"])
def test_text_over_the_size_limit_is_refused_before_it_is_read(text: bytes | str) -> None:
    with pytest.raises(JsonRefused, match="larger than 100 bytes"):
        parse(text, bytes_max=100)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


# Strings full of what the depth scan must see through: brackets, quotes, backslashes.
tricky_text = st.text(alphabet='[]{}"\\ab\n\u00e5', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=40,
)


@given(json_values, st.integers(min_value=0, max_value=12), st.booleans())
def test_the_depth_scan_measures_exactly_what_a_parser_would_nest(
    value: Any, depth_max: int, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _deeper_than(text, depth_max) == (depth_of(value) > depth_max)
    if depth_of(value) <= limits.json_depth_max:
        assert parse(text, bytes_max=BYTES_MAX) == value
