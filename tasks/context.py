"""The worker process's `Services`, built on first use and rebuilt after a fork."""

from __future__ import annotations

from billing.adapters.events import EventPublisher, Topology
from billing.bootstrap import Services
from billing.config import Settings

_services: Services | None = None
_publisher: EventPublisher | None = None


def services() -> Services:
    global _services
    if _services is None:
        _services = Services(Settings.from_env(), pool_size=2)
    return _services


def reset() -> None:
    """Forget what a parent process built: connections are never shared across a fork."""
    global _services, _publisher
    if _services is not None:
        _services.dispose()
    _services = None
    _publisher = None


def event_publisher() -> EventPublisher:
    """The process's publisher of events (its own broker connection, made on first use)."""
    global _publisher
    if _publisher is None:
        from tasks.celery_app import app

        settings = services().settings
        _publisher = EventPublisher(settings.broker_url, app.producer_pool, Topology(settings))
    return _publisher
