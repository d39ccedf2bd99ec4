"""The API's grouper: a lone call runs at once; calls made during a call run together next."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from billing.grouping import Grouper
from billing.ports import TransientError

WAIT_S = 10  # how long a test waits for a condition before it fails


class Recorder:
    """Records each group; the first call blocks until released when `block_first` is set."""

    def __init__(self, block_first: bool = False, fail_groups: tuple[int, ...] = ()) -> None:
        self.groups: list[list[int]] = []
        self.threads: list[int] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self._block_first = block_first
        self._fail_groups = fail_groups

    def __call__(self, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        self.threads.append(threading.get_ident())
        if len(self.groups) == 1 and self._block_first:
            self.first_started.set()
            assert self.release.wait(WAIT_S), "the test never released the first call"
        if len(self.groups) in self._fail_groups:
            raise RuntimeError(f"group {len(self.groups)} failed")
        return [item * 10 for item in items]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def submit_in_order(
    pool: ThreadPoolExecutor, grouper: Grouper[int, int], items: list[int]
) -> list[Future[int]]:
    """Submit each item from a thread of its own, the next once the one before is waiting."""
    futures = []
    for item in items:
        waiting_before = grouper.waiting
        futures.append(pool.submit(grouper.submit, item))
        wait_until(lambda before=waiting_before: grouper.waiting == before + 1)
    return futures


def test_a_lone_call_runs_at_once_in_its_own_thread() -> None:
    handle = Recorder()
    grouper = Grouper(handle, size_max=100, wait_max_s=WAIT_S)

    assert grouper.submit(7) == 70
    # Run by the caller itself before it returned: nothing waited for company.
    assert handle.groups == [[7]]
    assert handle.threads == [threading.get_ident()]
    assert grouper.submit(8) == 80
    assert handle.groups == [[7], [8]]


def test_calls_made_while_a_call_runs_go_together_in_the_next_one() -> None:
    handle = Recorder(block_first=True)
    grouper = Grouper(handle, size_max=100, wait_max_s=WAIT_S)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(grouper.submit, 0)
        assert handle.first_started.wait(WAIT_S)
        later = submit_in_order(pool, grouper, [1, 2, 3, 4, 5])
        assert handle.groups == [[0]]  # the others wait for the call under way

        handle.release.set()
        assert first.result(WAIT_S) == 0
        assert [f.result(WAIT_S) for f in later] == [10, 20, 30, 40, 50]
    assert handle.groups == [[0], [1, 2, 3, 4, 5]]
    assert grouper.waiting == 0


def test_a_full_group_closes_and_later_calls_start_the_next() -> None:
    handle = Recorder(block_first=True)
    grouper = Grouper(handle, size_max=3, wait_max_s=WAIT_S)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(grouper.submit, 0)
        assert handle.first_started.wait(WAIT_S)
        later = submit_in_order(pool, grouper, [1, 2, 3, 4, 5, 6, 7])

        handle.release.set()
        assert first.result(WAIT_S) == 0
        assert [f.result(WAIT_S) for f in later] == [n * 10 for n in range(1, 8)]
    assert handle.groups == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_every_caller_of_a_failed_group_gets_its_error_and_the_next_group_still_runs() -> None:
    handle = Recorder(block_first=True, fail_groups=(2,))
    grouper = Grouper(handle, size_max=3, wait_max_s=WAIT_S)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(grouper.submit, 0)
        assert handle.first_started.wait(WAIT_S)
        failing = submit_in_order(pool, grouper, [1, 2, 3])
        after = submit_in_order(pool, grouper, [4])

        handle.release.set()
        assert first.result(WAIT_S) == 0
        for future in failing:
            with pytest.raises(RuntimeError, match="group 2 failed"):
                future.result(WAIT_S)
        assert after[0].result(WAIT_S) == 40
    assert handle.groups == [[0], [1, 2, 3], [4]]
    # The grouper is free again: a lone call runs at once.
    assert grouper.submit(9) == 90


def test_calls_behind_a_call_that_does_not_return_give_up_after_the_wait_bound() -> None:
    handle = Recorder(block_first=True)
    grouper = Grouper(handle, size_max=100, wait_max_s=0.2)
    with ThreadPoolExecutor(8) as pool:
        stuck = pool.submit(grouper.submit, 0)
        assert handle.first_started.wait(WAIT_S)
        behind = [pool.submit(grouper.submit, item) for item in (1, 2, 3)]
        for future in behind:
            with pytest.raises(TransientError, match="in time"):
                future.result(WAIT_S)
        # Given up: none of them is handled once the stuck call returns.
        handle.release.set()
        assert stuck.result(WAIT_S) == 0
    assert handle.groups == [[0]]
    assert grouper.waiting == 0
    assert grouper.submit(4) == 40
    assert handle.groups == [[0], [4]]
