"""Group the calls that threads of one process make at about the same time into one call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from billing.ports import TransientError

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Group(Generic[Item, Result]):
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.full = threading.Event()
        self.done = threading.Event()
        self.results: list[Result] = []
        self.error: BaseException | None = None


class Grouper(Generic[Item, Result]):
    """Runs `handle` once for the items that threads submit within a short window.

    The first thread of a group waits while others keep joining (no pause
    longer than `idle_s`), up to `window_s` or until `size_max` items have
    joined, then runs `handle` on the whole group, in the order
    the items came, for everyone; each thread gets back its own item's
    result, or the error `handle` raised. Under load this turns many small
    round trips (a commit, a confirmed publish) into one per group; alone, a
    call waits `idle_s`. In the API's gevent processes the threads are
    greenlets (gevent patches `threading`), and the same holds.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], list[Result]],
        window_s: float,
        idle_s: float,
        size_max: int,
        wait_max_s: float,
    ) -> None:
        self._handle = handle
        self._window_s = window_s
        self._idle_s = idle_s
        self._size_max = size_max
        self._wait_max_s = wait_max_s
        self._lock = threading.Lock()
        self._open: _Group[Item, Result] | None = None

    def _gather(self, group: _Group[Item, Result]) -> None:
        """Wait while the group keeps growing, up to the window (or until it is full)."""
        deadline = time.monotonic() + self._window_s
        while True:
            size = len(group.items)
            if group.full.wait(min(self._idle_s, max(deadline - time.monotonic(), 0))):
                return
            if len(group.items) == size or time.monotonic() >= deadline:
                return

    def submit(self, item: Item) -> Result:
        with self._lock:
            group, leader = self._open, False
            if group is None:
                group, leader = _Group(), True
                self._open = group
            index = len(group.items)
            group.items.append(item)
            if len(group.items) >= self._size_max:
                self._open = None
                group.full.set()
        if leader:
            self._gather(group)
            with self._lock:
                if self._open is group:
                    self._open = None
            try:
                group.results = self._handle(group.items)
            except BaseException as error:
                group.error = error
            finally:
                group.done.set()
        elif not group.done.wait(self._wait_max_s):
            raise TransientError("the group this call joined did not finish in time")
        if group.error is not None:
            raise group.error
        return group.results[index]
