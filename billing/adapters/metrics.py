"""Prometheus metrics of the API and the workers (prometheus-client, multiprocess mode).

gunicorn and the Celery pool run several processes, so every process writes
its samples to files in one directory per machine (`BILLING_METRICS_DIR`,
exported as PROMETHEUS_MULTIPROC_DIR before the first import of
prometheus_client), and a scrape adds them up: the API's `/metrics` and a
worker's `--metrics-port` both serve the whole machine.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from billing import limits
from billing.adapters.backlog import outbox_backlog, responses_depth


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe(amount)` for every amount, one write per bucket touched.

    In multiprocess mode every write is a locked write to a memory-mapped
    file, and a ledger task observes two amounts per operation: a thousand
    writes for a batch of 500, a tenth of the worker's time. This adds them
    up first. It uses the histogram's values (`_upper_bounds`, `_buckets`,
    `_sum`), which prometheus-client's own `observe` updates the same way;
    tests/unit/test_metrics_bulk.py holds the two to the same samples.
    """
    histogram._raise_if_not_observable()
    bounds = histogram._upper_bounds
    per_bucket: Tally[int] = Tally()
    total = 0.0
    for amount in amounts:
        per_bucket[bisect_left(bounds, amount)] += 1  # the first bound >= amount, as `observe`
        total += amount
    if not per_bucket:
        return
    histogram._sum.inc(total)
    for index, count in per_bucket.items():
        histogram._buckets[index].inc(count)


LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

http_requests = Counter(
    "billing_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
)
http_latency = Histogram(
    "billing_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_S,
)
operations_accepted = Counter(
    "billing_operations_accepted_total",
    "Operations submitted, by type and answer (accepted, repeated, conflict)",
    ["type", "outcome"],
)
operations_completed = Counter(
    "billing_operations_completed_total",
    "Operations that reached a terminal status, by type, status and error code",
    ["type", "status", "error_code"],
)
internal_errors = Counter(
    "billing_operations_internal_error_total",
    "Operations that ended failed with internal_error, by type: refused by the ledger's gate, "
    "failing alone for a reason other than an outage, or resent too often by the sweep; "
    "each is logged at error level with its id",
    ["type"],
)
acceptance_to_terminal = Histogram(
    "billing_operation_acceptance_to_terminal_seconds",
    "Time from acceptance to terminal status",
    ["type"],
    buckets=LATENCY_BUCKETS_S,
)
ledger_task_duration = Histogram(
    "billing_ledger_task_duration_seconds",
    "Duration of the ledger task",
    ["type"],
    buckets=LATENCY_BUCKETS_S,
)
lock_busy_retries = Counter(
    "billing_lock_busy_retries_total", "Ledger tasks retried because an account lock was busy"
)
intake_messages_parked = Counter(
    "billing_intake_messages_parked_total",
    "Messages the AMQP intake dead-lettered because handling them failed (a bug, or a "
    "message the consumer could not read): every one is logged at error level",
    ["reason"],
)
# A ledger transaction of one operation holds its locks a few milliseconds,
# one of 500 about a hundred; every other transaction on those accounts waits.
LOCK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ledger_lock_wait = Histogram(
    "billing_ledger_lock_wait_seconds",
    "Time a ledger transaction took to take its account locks and read the accounts",
    buckets=LOCK_BUCKETS_S,
)
ledger_locks_held = Histogram(
    "billing_ledger_locks_held_seconds",
    "Time a ledger transaction held its account locks: from taking them to its commit or rollback",
    buckets=LOCK_BUCKETS_S,
)

events_refused = Counter(
    "billing_events_refused_total",
    "Events the broker did not take (billing.responses full, or publishers blocked by a "
    "resource alarm): each stays in the outbox and the relay publishes it later",
)
broker_blocked = Gauge(
    "billing_broker_blocked",
    "1 while the broker blocks this machine's event publishers (connection.blocked: a memory "
    "or disk alarm; the API's and workers' task messages are blocked too), else 0",
    multiprocess_mode="livemax",
)
broker_blocked_notices = Counter(
    "billing_broker_blocked_notifications",
    "connection.blocked notifications the event publishers received (resource alarms)",
)


class EventBacklog(Collector):
    """Where events wait, read at scrape time: unpublished in the outbox (how many, the
    oldest's age) and unread in `billing.responses` (its depth)."""

    def __init__(self, engine: Engine, broker_url: str | None, responses_queue: str) -> None:
        self._engine = engine
        self._broker_url = broker_url
        self._responses_queue = responses_queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(
            "billing_outbox_backlog", "Events recorded and not yet published (the outbox)"
        )
        oldest = GaugeMetricFamily(
            "billing_outbox_oldest_unpublished_age_seconds",
            "How long the oldest unpublished event has waited (0 when none waits)",
        )
        try:
            found = outbox_backlog(self._engine, count_max=limits.metrics_backlog_count_max)
            backlog.add_metric([], float(found.events))
            oldest.add_metric([], found.oldest_age_s)
        except Exception:
            backlog.add_metric([], float("nan"))
            oldest.add_metric([], float("nan"))
        yield backlog
        yield oldest
        if self._broker_url is None:
            return
        depth = GaugeMetricFamily(
            "billing_responses_depth",
            "Events ready in billing.responses, waiting for its consumer",
        )
        try:
            ready = responses_depth(
                self._broker_url, self._responses_queue, limits.broker_connect_timeout_s
            )
            depth.add_metric([], float(ready))
        except Exception:
            depth.add_metric([], float("nan"))
        yield depth


def metrics_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def prepare_metrics_dir(path: str, *, wipe: bool) -> str:
    """Create (and, at the start of a whole stack, empty) the machine's metrics directory."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    if wipe:
        for stale in directory.glob("*.db"):
            stale.unlink()
    return str(directory)


def render(
    engine: Engine | None = None,
    broker_url: str | None = None,
    responses_queue: str = "billing.responses",
) -> tuple[bytes, str]:
    """The exposition of every process on this machine, and where events wait."""
    directory = metrics_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    output = generate_latest(registry)
    if engine is not None:
        backlog = CollectorRegistry()
        backlog.register(EventBacklog(engine, broker_url, responses_queue))
        output += generate_latest(backlog)
    return output, CONTENT_TYPE_LATEST
