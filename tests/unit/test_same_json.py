"""When a repeated account's metadata is the same as the stored one (`same_json`)."""

from __future__ import annotations

from typing import Any

import pytest

from billing.service import same_json


@pytest.mark.parametrize(
    ("stored", "given"),
    [
        pytest.param({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, id="keys_in_another_order"),
        pytest.param({"n": 10**20}, {"n": 1e20}, id="jsonb_writes_1e20_out_in_full"),
        pytest.param({"n": 15 * 10**299}, {"n": 1.5e300}, id="jsonb_writes_1_5e300_out"),
        pytest.param({"n": 100.0}, {"n": 100}, id="the_same_number_as_float_and_integer"),
        pytest.param({"deep": {"list": [None, True, "x"]}}, {"deep": {"list": [None, True, "x"]}}),
        pytest.param({}, {}, id="empty"),
    ],
)
def test_the_same_json_values_are_the_same(stored: Any, given: Any) -> None:
    assert same_json(stored, given)


@pytest.mark.parametrize(
    ("stored", "given"),
    [
        pytest.param({"a": True}, {"a": 1}, id="true_is_not_one"),
        pytest.param({"a": False}, {"a": 0}, id="false_is_not_zero"),
        pytest.param({"a": 1}, {"a": "1"}, id="number_is_not_text"),
        pytest.param({"a": None}, {}, id="null_is_not_absent"),
        pytest.param({"a": [1, 2]}, {"a": [2, 1]}, id="list_in_another_order"),
        pytest.param({"a": [1]}, {"a": [1, 1]}, id="list_with_an_item_more"),
        pytest.param({"a": {}}, {"a": []}, id="object_is_not_list"),
        pytest.param({"a": 10**400}, {"a": 1e308}, id="integer_beyond_any_float"),
        pytest.param({"a": 2**53 + 1}, {"a": 2**53}, id="integers_differing_in_the_last_digit"),
        pytest.param({"a": 1}, {"a": 1, "b": 2}, id="a_key_more"),
    ],
)
def test_other_json_values_are_not_the_same(stored: Any, given: Any) -> None:
    assert not same_json(stored, given)
    assert not same_json(given, stored)
