"""Group the calls that threads of one process make while a write is under way into one call."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from billing.ports import TransientError

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Group(Generic[Item, Result]):
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.turn = threading.Event()  # set when this group's leader is to write it
        self.done = threading.Event()
        self.results: list[Result] = []
        self.error: BaseException | None = None


class Grouper(Generic[Item, Result]):
    """Runs `handle` once for the items that threads submit while an earlier call runs.

    Group commit, driven by the work and not by a clock: when no call of
    `handle` is under way, an item is handled at once, alone, by the thread
    that submitted it. Items submitted while one is under way gather in the
    next group, up to `size_max` items (a full group closes and later items
    start another); when the call under way returns, the next group is
    handed to its first thread, its leader, which runs `handle` on the
    whole group, in the order the items came, for everyone. Each thread
    gets back its own item's result, or the error `handle` raised for its
    group. One call runs at a time: a quiet process answers in one round
    trip, a busy one in as few calls as the work allows, each as big as
    what arrived during the one before.

    A thread that waits longer than `wait_max_s` (behind a call that does
    not return) gets a TransientError; a group whose turn has not come by
    then is given up, so none of its items is handled. In the API's gevent
    processes the threads are greenlets (gevent patches `threading`), and
    the same holds.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], list[Result]],
        size_max: int,
        wait_max_s: float,
    ) -> None:
        self._handle = handle
        self._size_max = size_max
        self._wait_max_s = wait_max_s
        self._lock = threading.Lock()
        self._writing = False
        # Groups waiting for their turn, oldest first; only the last may still grow.
        self._waiting: deque[_Group[Item, Result]] = deque()

    @property
    def waiting(self) -> int:
        """How many items wait for a call of `handle` (not counting the one under way)."""
        with self._lock:
            return sum(len(group.items) for group in self._waiting)

    def submit(self, item: Item) -> Result:
        with self._lock:
            if self._waiting and len(self._waiting[-1].items) < self._size_max:
                group, leader = self._waiting[-1], False
            else:
                group, leader = _Group(), True
                self._waiting.append(group)
            index = len(group.items)
            group.items.append(item)
            if not self._writing:
                self._writing = True
                self._waiting.popleft().turn.set()
        if leader:
            self._lead(group)
        elif not group.done.wait(self._wait_max_s):
            raise TransientError("the group this call joined did not finish in time")
        if group.error is not None:
            raise group.error
        return group.results[index]

    def _lead(self, group: _Group[Item, Result]) -> None:
        """Wait for the group's turn, run `handle` on it, and hand the turn on."""
        if not group.turn.wait(self._wait_max_s):
            with self._lock:
                given_up = group in self._waiting
                if given_up:
                    self._waiting.remove(group)
            if given_up:
                group.error = TransientError("the call before this group did not finish in time")
                group.done.set()
                return
        try:
            group.results = self._handle(group.items)
        except BaseException as error:
            group.error = error
        finally:
            group.done.set()
            with self._lock:
                if self._waiting:
                    self._waiting.popleft().turn.set()
                else:
                    self._writing = False
