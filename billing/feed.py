"""The event feed's rules: what a page after a feed number is, and when it cannot be had.

Every event published to `billing.events` carries a feed number,
`event_seq`, also in its body. Numbers are given after the event's
transaction committed, in the order they become visible and without gaps
(`adapters.event_feed`), so a reader that asks for the events after the
last number it saw never misses one; the oldest events are pruned after the
retention, always a prefix of the numbers. So a page that does not start
right after `after` can only mean those events were pruned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class FeedEvent:
    event_seq: int
    message_id: str
    routing_key: str
    # The JSON text published to the exchange, the same bytes as every copy there.
    body: str


@dataclass(frozen=True)
class FeedPage:
    events: list[FeedEvent]
    # The `after` of the next page: the last number on this one, or `after` again.
    next_after: int


class EventsPruned(Exception):
    """The events right after `after` are past the retention and gone from the feed."""

    def __init__(self, after: int, retained_after: int) -> None:
        super().__init__(
            f"the events after {after} are no longer kept; "
            f"the feed is kept from after={retained_after}"
        )
        self.retained_after = retained_after


class AfterBeyondEnd(Exception):
    """`after` is past the last number given: no event has it (another deployment's?)."""

    def __init__(self, after: int, last_seq: int) -> None:
        super().__init__(f"after={after} is beyond the last event ({last_seq})")
        self.last_seq = last_seq


def feed_page(after: int, last_seq: int, events: list[FeedEvent]) -> FeedPage:
    """The page of `events` read after `after`, with `last_seq` from the same snapshot.

    Raise EventsPruned when the events right after `after` are gone, and
    AfterBeyondEnd when `after` names no event given yet.
    """
    if after > last_seq:
        raise AfterBeyondEnd(after, last_seq)
    if events and events[0].event_seq != after + 1:
        raise EventsPruned(after, events[0].event_seq - 1)
    if not events and after < last_seq:
        raise EventsPruned(after, last_seq)
    for earlier, later in itertools.pairwise(events):
        assert later.event_seq == earlier.event_seq + 1, (
            f"feed numbers {earlier.event_seq} and {later.event_seq} have a gap between them"
        )
    return FeedPage(events, events[-1].event_seq if events else after)
