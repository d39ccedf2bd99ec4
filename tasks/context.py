"""The worker process's `Services`, built on first use and rebuilt after a fork.

The process's event publisher lives beside the app whose producer pool it
uses (`tasks.celery_app.event_publisher`), so this module imports no task module.
"""

from __future__ import annotations

from billing import limits
from billing.bootstrap import Services
from billing.config import Settings

_services: Services | None = None


def services() -> Services:
    global _services
    if _services is None:
        _services = Services(Settings.from_env(), pool_size=limits.database_pool_size_worker)
    return _services


def reset() -> None:
    """Forget what a parent process built: connections are never shared across a fork."""
    global _services
    if _services is not None:
        _services.dispose()
    _services = None
