"""The worker's consumer sets up Celery's delayed delivery once per cluster, via Celery's step."""

from __future__ import annotations

import inspect

from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery

from tasks.consumer import DeadLetteringConsumer


def test_the_consumer_runs_celerys_steps_with_two_replaced_by_ours() -> None:
    ours = DeadLetteringConsumer.Blueprint.default_steps
    celerys = Consumer.Blueprint.default_steps
    changed = [(c, o) for c, o in zip(celerys, ours, strict=True) if c != o]
    assert sorted(changed) == [
        ("celery.worker.consumer.control:Control", "tasks.consumer:GuardedControl"),
        (
            "celery.worker.consumer.delayed_delivery:DelayedDelivery",
            "tasks.consumer:ClusterDelayedDelivery",
        ),
    ]


def test_the_private_methods_of_celerys_step_that_it_calls_are_still_there() -> None:
    setup = inspect.signature(DelayedDelivery._setup_delayed_delivery)
    validate = inspect.signature(DelayedDelivery._validate_configuration)
    assert list(setup.parameters) == ["self", "c", "broker_url"]
    assert list(validate.parameters) == ["self", "app"]


def test_celerys_control_step_still_listens_through_the_handler_that_guarded_control_wraps() -> (
    None
):
    from celery.worker import pidbox
    from celery.worker.consumer.control import Control

    assert "self.box = " in inspect.getsource(Control.__init__)
    assert "callback=self.on_message" in inspect.getsource(pidbox.Pidbox.start)
