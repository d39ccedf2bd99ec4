"""Celery: the app, the ledger tasks, the AMQP intake and the periodic jobs.

`celery -A tasks worker` finds the app as `tasks.app`.
"""

from tasks.celery_app import app

__all__ = ["app"]
