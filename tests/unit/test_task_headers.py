"""The shape of a task message's headers is checked before Celery reads them in the main process."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.consumer import header_problem

GOOD = {
    "lang": "py",
    "task": "billing.apply_operations",
    "id": "5b9e4a4e-0000-4000-8000-000000000000",
    "shadow": None,
    "eta": None,
    "expires": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "timelimit": [None, None],
    "root_id": "5b9e4a4e-0000-4000-8000-000000000000",
    "parent_id": None,
    "argsrepr": "(['op-1'],)",
    "kwargsrepr": "{}",
    "origin": "gen1@host",
    "ignore_result": False,
    "replaced_task_nesting": 0,
    "stamped_headers": None,
    "stamps": {},
}


def test_the_headers_celery_itself_sends_pass() -> None:
    assert header_problem(GOOD) is None
    assert header_problem({**GOOD, "timelimit": [120, 90.5], "eta": "2026-12-06T00:00:00"}) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timelimit", 2.5),
        ("timelimit", [1, 2, 3]),
        ("timelimit", ["1", None]),
        ("timelimit", [float("nan"), None]),
        ("timelimit", [-1, None]),
        ("timelimit", [10**9, None]),
        ("timelimit", [True, None]),
        ("id", ["a"]),
        ("task", {"name": "x"}),
        ("retries", "3"),
        ("retries", -1),
        ("eta", 12),
        ("ignore_result", "yes"),
        ("stamps", []),
        ("groups", "g"),
    ],
)
def test_a_header_of_another_shape_is_a_problem(name: str, value: Any) -> None:
    assert header_problem({**GOOD, name: value}) is not None


def test_missing_or_odd_headers_are_a_problem() -> None:
    assert header_problem(None) is not None
    assert header_problem([1, 2]) is not None
    assert header_problem({k: v for k, v in GOOD.items() if k != "id"}) is not None


def test_a_control_command_of_celerys_own_shape_passes() -> None:
    from tasks.consumer import control_problem

    command = {
        "method": "ping",
        "arguments": {},
        "destination": ["w1@host"],
        "pattern": None,
        "matcher": None,
        "ticket": "5b9e4a4e",
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "5b9e4a4e"},
    }
    assert control_problem(command) is None


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "ping",
        {"method": 5},
        {"method": "ping", "arguments": [1]},
        {"method": "ping", "arguments": {"a": [[[[[1]]]]]}},
        {"method": "ping", "destination": "w1"},
        {"method": "ping", "reply_to": "queue"},
        {"method": "ping", "ticket": 7},
    ],
)
def test_a_control_command_of_another_shape_is_a_problem(body: Any) -> None:
    from tasks.consumer import control_problem

    assert control_problem(body) is not None


@pytest.mark.parametrize(
    "deaths",
    [5, [5], ["rejected"], [{"queue": 1, "reason": "rejected"}], [{"queue": "q"}], None],
)
def test_an_x_death_header_that_is_not_a_list_of_death_records_is_a_problem(deaths: Any) -> None:
    from tasks.consumer import x_death_problem

    assert x_death_problem({"x-death": deaths}) is not None


def test_the_x_death_header_the_broker_writes_is_no_problem() -> None:
    from tasks.consumer import x_death_problem

    death = {"count": 1, "reason": "rejected", "queue": "billing.tasks", "exchange": "", "time": 0}
    assert x_death_problem({"x-death": [death]}) is None
    assert x_death_problem({}) is None
