"""The event feed's pages: where the next starts, and when `after` cannot be served."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from billing import limits
from billing.adapters.schemas import EventPageQuerySchema
from billing.config import Settings
from billing.feed import AfterBeyondEnd, EventsPruned, FeedEvent, feed_page


def events(*seqs: int) -> list[FeedEvent]:
    return [FeedEvent(seq, f"op-{seq}", "operation.credit.succeeded", "{}") for seq in seqs]


def test_a_page_continues_right_after_the_last_number_it_holds() -> None:
    page = feed_page(after=4, last_seq=9, events=events(5, 6, 7))
    assert [e.event_seq for e in page.events] == [5, 6, 7]
    assert page.next_after == 7


def test_a_reader_at_the_end_gets_an_empty_page_and_stays_where_it_is() -> None:
    assert feed_page(after=9, last_seq=9, events=[]).next_after == 9
    assert feed_page(after=0, last_seq=0, events=[]).next_after == 0


def test_a_page_that_starts_past_after_means_the_events_between_were_pruned() -> None:
    with pytest.raises(EventsPruned) as pruned:
        feed_page(after=2, last_seq=9, events=events(6, 7))
    assert pruned.value.retained_after == 5


def test_no_events_before_the_last_number_means_every_one_after_was_pruned() -> None:
    with pytest.raises(EventsPruned) as pruned:
        feed_page(after=2, last_seq=9, events=[])
    assert pruned.value.retained_after == 9


def test_after_beyond_the_last_number_given_is_refused() -> None:
    with pytest.raises(AfterBeyondEnd):
        feed_page(after=10, last_seq=9, events=[])


def test_a_gap_inside_a_page_breaks_an_invariant_and_fails_loudly() -> None:
    with pytest.raises(AssertionError):
        feed_page(after=4, last_seq=9, events=events(5, 7))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {"after": 0, "limit": limits.page_size_default}),
        ({"after": "0", "limit": "1"}, {"after": 0, "limit": 1}),
        (
            {"after": "123456789012345678", "limit": "500"},
            {"after": 123456789012345678, "limit": 500},
        ),
    ],
)
def test_the_feed_query_takes_after_in_digits_and_a_limit_of_a_page(
    query: dict[str, str], expected: dict[str, int]
) -> None:
    assert EventPageQuerySchema().load(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        {"after": "-1"},
        {"after": "+1"},
        {"after": " 1"},
        {"after": "1.0"},
        {"after": "1e3"},
        {"after": "\uff11"},  # a fullwidth digit, which int() would take
        {"after": ""},
        {"after": "1234567890123456789"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"cursor": "5"},
    ],
)
def test_the_feed_query_refuses_what_is_not_a_page(query: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EventPageQuerySchema().load(query)


def test_the_retention_is_the_contracts_unless_set_longer(monkeypatch: Any) -> None:
    monkeypatch.delenv("BILLING_EVENT_RETENTION_DAYS", raising=False)
    assert Settings.from_env().event_retention_days == limits.event_retention_days_min == 30
    monkeypatch.setenv("BILLING_EVENT_RETENTION_DAYS", "90")
    assert Settings.from_env().event_retention_days == 90


@pytest.mark.parametrize("value", ["29", "0", "-30", "thirty", "30.5"])
def test_a_retention_shorter_than_promised_or_not_in_days_stops_the_process(
    monkeypatch: Any, value: str
) -> None:
    monkeypatch.setenv("BILLING_EVENT_RETENTION_DAYS", value)
    with pytest.raises(ValueError, match="BILLING_EVENT_RETENTION_DAYS"):
        Settings.from_env()
