"""How each side sends to the broker: the API without waiting for confirms, the workers with."""

from __future__ import annotations

from billing.adapters.celery_client import APPLY_OPERATIONS_TASK, make_celery_app


def test_the_app_waits_for_the_brokers_confirms_unless_told_not_to() -> None:
    assert make_celery_app().conf.broker_transport_options["confirm_publish"] is True
    unconfirmed = make_celery_app(confirm_publish=False).conf.broker_transport_options
    assert unconfirmed["confirm_publish"] is False
    # Turning them off for one app leaves every other app as configured.
    assert make_celery_app().conf.broker_transport_options["confirm_publish"] is True


def test_a_ledger_task_that_fails_or_times_out_is_never_acknowledged_away() -> None:
    from tasks.celery_app import app

    app.loader.import_default_modules()
    task = app.tasks[APPLY_OPERATIONS_TASK]
    assert task.acks_late is True
    assert task.acks_on_failure is False
    assert task.acks_on_timeout is False
    assert task.reject_on_worker_lost is True
