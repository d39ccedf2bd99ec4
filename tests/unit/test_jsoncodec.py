"""The JSON codec of the ledger's columns and events: fast, and exact for every integer."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from billing.adapters import jsoncodec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_every_value_comes_back_exactly_as_it_went_in(value: object) -> None:
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def test_integers_beyond_64_bits_stay_exact_both_ways() -> None:
    big = {"limit": 10**30, "negative": -(2**70)}
    text = jsoncodec.dumps(big)
    assert json.loads(text) == big
    assert jsoncodec.loads('{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


def test_the_same_value_always_gives_the_same_compact_text_with_sorted_keys() -> None:
    assert jsoncodec.dumps({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert jsoncodec.dumps({"b": 10**20, "a": "é"}) == '{"a":"é","b":100000000000000000000}'
