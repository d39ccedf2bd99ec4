"""Connecting to a RabbitMQ cluster named by several URLs (`amqp://a//;amqp://b//`).

kombu takes such a list as one connection that moves to the next URL when
its node fails (round robin), and Celery does the same for the workers, beat
and the API's task publishing. What kombu does not do on its own is try every
node before giving up: its implicit connect, on a connection's first channel,
makes two attempts with a pause between, so with three nodes the third is
never tried.
"""

from __future__ import annotations

from kombu import Connection


def connect_to_a_node(connection: Connection) -> None:
    """Connect to the first node of the URL list that answers, each tried once, in order.

    Raises kombu's OperationalError when none answers; a caller that retries
    starts again from the first node.
    """
    connection.ensure_connection(max_retries=max(len(connection.alt), 1) - 1)
