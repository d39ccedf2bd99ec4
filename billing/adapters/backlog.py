"""How many events wait, and where: unpublished in the outbox, unread in `billing.responses`.

Read by the metrics scrape, `/readyz` and `billing up`; each read is cheap
even with millions of events waiting: the count stops at a limit, the
oldest event is found by the first pending mark, and the queue's depth is
what a passive declaration answers (no management plugin needed).
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu import Connection
from sqlalchemy import Engine, text

from billing import limits

# The pending marks are the outbox's unpublished events; the first of them is
# the oldest (event ids grow with time), found through the primary key.
_OUTBOX_BACKLOG = text(
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox_pending LIMIT :n) AS p) AS events, "
    "COALESCE((SELECT EXTRACT(EPOCH FROM now() - o.created_at) FROM outbox o "
    "WHERE o.event_id = (SELECT min(event_id) FROM outbox_pending)), 0) AS oldest_age_s"
)


@dataclass(frozen=True)
class OutboxBacklog:
    """Events recorded and not yet published: how many (counted up to `count_max`), and
    how long the oldest has waited."""

    events: int
    oldest_age_s: float
    count_max: int

    @property
    def waiting(self) -> bool:
        """Whether events wait longer than their own publish takes: the relay's to send
        (the broker refused them, or is unreachable)."""
        return self.oldest_age_s > limits.outbox_republish_after_s

    @property
    def capped(self) -> bool:
        return self.events >= self.count_max


def outbox_backlog(engine: Engine, count_max: int) -> OutboxBacklog:
    with engine.connect() as connection:
        row = connection.execute(_OUTBOX_BACKLOG, {"n": count_max}).one()
    return OutboxBacklog(int(row.events), float(row.oldest_age_s), count_max)


def responses_depth(broker_url: str, queue: str, timeout_s: float) -> int:
    """The events ready in `billing.responses` (delivered but unacknowledged ones not counted)."""
    with Connection(broker_url, connect_timeout=timeout_s) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout_s)
        channel = connection.channel()
        return int(channel.queue_declare(queue, passive=True).message_count)
