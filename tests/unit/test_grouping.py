"""The API's grouper: calls made together run as one, each caller gets its own result."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from billing.grouping import Grouper


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.groups: list[list[int]] = []
        self.fail = fail

    def __call__(self, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        if self.fail:
            raise RuntimeError("the group failed")
        return [item * 10 for item in items]


def submit_together(grouper: Grouper[int, int], items: list[int]) -> list[int]:
    """Every item from its own thread, all released at once."""
    start = threading.Barrier(len(items))

    def one(item: int) -> int:
        start.wait()
        return grouper.submit(item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(one, items))


def test_calls_made_together_run_as_one_group_and_each_gets_its_own_result() -> None:
    handle = Recorder()
    # A generous gap, so threads released together always join the same group.
    grouper = Grouper(handle, window_s=5, idle_s=0.5, size_max=100, wait_max_s=10)
    assert submit_together(grouper, list(range(8))) == [n * 10 for n in range(8)]
    assert len(handle.groups) == 1
    assert sorted(handle.groups[0]) == list(range(8))


def test_a_full_group_closes_at_once_and_the_rest_form_another() -> None:
    handle = Recorder()
    grouper = Grouper(handle, window_s=5, idle_s=0.5, size_max=3, wait_max_s=10)
    assert submit_together(grouper, list(range(5))) == [n * 10 for n in range(5)]
    assert sorted(len(group) for group in handle.groups) == [2, 3]


def test_calls_apart_run_alone() -> None:
    handle = Recorder()
    grouper = Grouper(handle, window_s=0.05, idle_s=0.01, size_max=100, wait_max_s=10)
    assert [grouper.submit(n) for n in range(3)] == [0, 10, 20]
    assert handle.groups == [[0], [1], [2]]


def test_every_caller_of_a_failed_group_gets_its_error() -> None:
    grouper = Grouper(Recorder(fail=True), window_s=5, idle_s=0.5, size_max=100, wait_max_s=10)

    def one(item: int) -> str:
        with pytest.raises(RuntimeError, match="the group failed"):
            grouper.submit(item)
        return "raised"

    start = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda n: (start.wait(), one(n))[1], range(4))) == ["raised"] * 4
