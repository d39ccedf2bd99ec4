"""The worker process's `Services`, built on first use and rebuilt after a fork."""

from __future__ import annotations

from billing.adapters.events import EventPublisher, Topology
from billing.bootstrap import Services
from billing.config import Settings

_services: Services | None = None


def services() -> Services:
    global _services
    if _services is None:
        _services = Services(Settings.from_env(), pool_size=2)
    return _services


def reset() -> None:
    global _services
    if _services is not None:
        _services.dispose()
    _services = None


def event_publisher() -> EventPublisher:
    from tasks.celery_app import app

    return EventPublisher(app.producer_pool, Topology(services().settings))
