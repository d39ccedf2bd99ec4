"""Observing many amounts at once leaves a histogram as observing them one by one does."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from billing.adapters.metrics import LATENCY_BUCKETS_S, observe_many


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def histogram_in(registry: CollectorRegistry) -> Histogram:
    return Histogram("waited_seconds", "", ["type"], buckets=LATENCY_BUCKETS_S, registry=registry)


# Amounts on the bucket bounds themselves, between them, and beyond the last.
amounts = st.lists(
    st.one_of(
        st.sampled_from([0.0, *LATENCY_BUCKETS_S]),
        st.floats(min_value=0, max_value=120, allow_nan=False),
    ),
    max_size=200,
)


@given(amounts)
def test_the_buckets_count_and_sum_are_those_of_observe(values: list[float]) -> None:
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    single = histogram_in(one_by_one).labels("transfer")
    for value in values:
        single.observe(value)
    observe_many(histogram_in(at_once).labels("transfer"), values)
    expected, got = samples(one_by_one), samples(at_once)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9), key


def test_an_amount_on_a_bound_counts_in_that_bound() -> None:
    registry = CollectorRegistry()
    observe_many(histogram_in(registry).labels("credit"), [0.005, 0.005, 0.0051])
    got = samples(registry)
    assert got["waited_seconds_bucket", "0.005"] == 2
    assert got["waited_seconds_bucket", "0.01"] == 3
    assert got["waited_seconds_count", ""] == 3
