"""Counting the broker's publisher confirms, in order, out of order and several at once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billing.adapters.events import Confirms


def test_a_multiple_ack_confirms_every_tag_up_to_it() -> None:
    confirms = Confirms()
    confirms.ack(3, multiple=True)
    assert confirms.unconfirmed(5) == 2
    confirms.ack(5, multiple=True)
    assert confirms.unconfirmed(5) == 0


def test_single_acks_out_of_order_are_counted_once() -> None:
    confirms = Confirms()
    confirms.ack(2, multiple=False)
    confirms.ack(4, multiple=False)
    assert confirms.unconfirmed(4) == 2
    confirms.ack(1, multiple=False)
    assert (confirms.up_to, confirms.above) == (2, {4})
    confirms.ack(4, multiple=True)
    assert confirms.unconfirmed(4) == 0
    confirms.ack(2, multiple=False)  # a tag already confirmed changes nothing
    assert confirms.unconfirmed(4) == 0


@given(st.lists(st.tuples(st.integers(1, 40), st.booleans()), max_size=60))
def test_the_count_is_that_of_the_set_of_confirmed_tags(acks: list[tuple[int, bool]]) -> None:
    confirms, confirmed = Confirms(), set()
    for tag, multiple in acks:
        confirms.ack(tag, multiple)
        confirmed |= set(range(1, tag + 1)) if multiple else {tag}
        assert confirms.unconfirmed(40) == 40 - len(confirmed)


def test_a_multiple_nack_refuses_only_the_tags_not_confirmed_before_it() -> None:
    confirms = Confirms()
    confirms.ack(2, multiple=True)
    confirms.ack(4, multiple=False)
    confirms.nack(5, multiple=True)
    assert confirms.unconfirmed(6) == 1
    assert confirms.take_refused(1, 6) == {3, 5}
    assert confirms.take_refused(1, 6) == set()


def test_a_single_nack_refuses_its_tag_alone() -> None:
    confirms = Confirms()
    confirms.nack(2, multiple=False)
    confirms.ack(3, multiple=True)
    assert confirms.unconfirmed(3) == 0
    assert confirms.take_refused(1, 3) == {2}
