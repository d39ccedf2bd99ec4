"""Tasks put straight on the test run's Celery queue, as anyone with the broker's password could."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange

from billing.config import Settings


def send_task(settings: Settings, name: str, args: list[Any]) -> str:
    """Send a task by name with Celery's own client, past the API and the intake; its id."""
    app = Celery("billing-tests", set_as_current=False, broker=settings.broker_url)
    app.conf.broker_transport_options = {"confirm_publish": True}
    exchange = Exchange(settings.amqp_name("billing.tasks"), type="topic", durable=True)
    routing_key = settings.amqp_name(
        "billing.periodic" if name == "billing.resend_pending" else "billing.tasks"
    )
    try:
        with app.producer_or_acquire() as producer:
            # Nothing declared: the run's exchange exists, and Celery would
            # otherwise declare its default queue, `celery`, unprefixed on the
            # shared broker, where it stayed after every run.
            result = app.send_task(
                name,
                args=args,
                exchange=exchange,
                routing_key=routing_key,
                producer=producer,
                declare=[],
            )
        return str(result.id)
    finally:
        app.close()
