"""The worker's consumer, changed: undecodable and malformed task messages are dead-lettered.

Celery acknowledges a message it cannot decode (a pickle, a content type
outside `accept_content`, broken JSON), which drops it without a trace.
Rejecting it instead sends it to the queue's dead-letter exchange, where an
operator can inspect it; the worker carries on with the next message.

Celery also reads a task message's headers and body in the worker's main
process, before any task code runs, and some shapes make that reading raise:
a `task` or `id` header that is a list or an object, a body that is not
`[args, kwargs, embed]`. Such an error escapes into the consumer's event
loop, which stops the whole worker (and the message, redelivered, stops the
next one). Those messages are refused here like undecodable ones. Other headers are
read later, still in the main process, where no handler of ours can catch
what they raise (a `timelimit` that is not a pair stopped every worker):
every header Celery reads there is checked for its shape before Celery
sees the message (`header_problem`).

And Celery sets up its native delayed delivery (how a countdown works on
quorum queues) on every URL of a `;`-separated broker list, as if each were
a broker of its own, retrying a node that is down for about ten seconds
(1 + 3 + 5 s of pauses) before the worker consumes again: after every
reconnection while a cluster node is down, the worker's tasks waited that
long (17 s at the 99th percentile in tests/e2e/test_cluster.py). What it
declares (exchanges, queues, bindings) belongs to the whole cluster, so here
it is set up on the first node that answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.consumer.control import Control
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from vine import promise

from billing import limits

log = logging.getLogger(__name__)


class ClusterDelayedDelivery(DelayedDelivery):  # type: ignore[misc]
    """Celery's delayed delivery, set up once on the cluster instead of once per node.

    Uses two private methods of Celery's step (pinned in requirements.lock;
    tests/unit/test_consumer_steps.py fails when they move). With a single
    broker URL, or when no node answers at once, Celery's own start runs.
    """

    def start(self, c: Any) -> None:
        urls = [url for url in c.app.conf.broker_url.split(";") if url]
        if len(urls) > 1:
            self._validate_configuration(c.app)
            for url in urls:
                try:
                    self._setup_delayed_delivery(c, url)
                    return
                except Exception as error:  # the next node may answer
                    log.warning(
                        "delayed delivery: a broker node failed (%s); trying the next", error
                    )
        super().start(c)


class GuardedControl(Control):  # type: ignore[misc]
    """Celery's remote control, taking only commands of the shape Celery's clients send.

    On any error in a command Celery restarts its control consumer from inside
    the message handler; a stream of malformed commands nested those restarts
    until the worker's main process died of a RecursionError. A command whose
    body is not of that shape is dropped (logged) before Celery reads it.
    """

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        handle = self.box.on_message

        def on_message(body: Any, message: Any) -> None:
            problem = control_problem(body)
            if problem is not None:
                log.error("dropped a control message with %s", problem)
                return
            handle(body, message)

        self.box.on_message = on_message


_REPLACED_STEPS = {
    "DelayedDelivery": f"{__name__}:ClusterDelayedDelivery",
    "Control": f"{__name__}:GuardedControl",
}


def control_problem(body: Any) -> str | None:
    """What is wrong with the shape of a remote control command, or None."""
    if not isinstance(body, dict):
        return f"a body of type {type(body).__name__}"
    if not isinstance(body.get("method"), str):
        return "no method name"
    arguments = body.get("arguments")
    if arguments is not None and not (
        isinstance(arguments, dict) and all(isinstance(name, str) for name in arguments)
    ):
        return "arguments that are not named"
    if _depth(arguments) > limits.control_arguments_depth_max:
        return "arguments nested too deep"
    destination = body.get("destination")
    if destination is not None and not (
        isinstance(destination, list) and all(isinstance(name, str) for name in destination)
    ):
        return "a destination that is not a list of names"
    for name in ("pattern", "matcher", "ticket"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"a {name!r} that is not text"
    reply_to = body.get("reply_to")
    if reply_to is not None and not (
        isinstance(reply_to, dict)
        and isinstance(reply_to.get("exchange"), str)
        and isinstance(reply_to.get("routing_key"), str)
    ):
        return "a reply address that is not an exchange and a routing key"
    return None


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > limits.control_arguments_depth_max:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = [
            _REPLACED_STEPS.get(step.rsplit(":", 1)[1], step)
            for step in Consumer.Blueprint.default_steps
        ]

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        task_channel = getattr(self.task_consumer, "channel", None)
        if message.channel is not task_channel or _auto_acknowledged(message):
            # Celery hands this callback to its control (pidbox) consumer too,
            # whose messages the broker has already let go: a reject there is
            # a channel error (unknown delivery tag) that stopped the worker.
            log.error("dropped an undecodable control message: %s", exc)
            return
        log.error(
            "refused an undecodable message (content type %r): %s; dead-lettered",
            message.content_type,
            exc,
        )
        message.reject(requeue=False)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        handler = super().create_task_handler(promise)
        broker_errors = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> Any:
            problem = header_problem(message.headers)
            if problem is not None:
                log.error("refused a task message with %s; dead-lettered", problem)
                message.reject_log_error(log, broker_errors)
                return None
            if x_death_problem(message.headers) is not None:
                # Rejecting it would hand the header to the broker's
                # dead-lettering, which it crashes (RabbitMQ 3.10.8): dropped,
                # with what it was, in the log.
                log.error(
                    "dropped a task message with a malformed x-death header: %r",
                    message.body[:200],
                )
                message.ack_log_error(log, broker_errors)
                return None
            try:
                return handler(message)
            except broker_errors:
                raise  # the consumer reconnects, as for any broker fault
            except Exception as error:
                log.error("refused a malformed task message: %r; dead-lettered", error)
                if not message.acknowledged:
                    message.reject_log_error(log, broker_errors)
                return None

        return on_task_received


def _auto_acknowledged(message: Any) -> bool:
    """Whether a consumer without acknowledgements delivered the message (as kombu's own
    `Message.ack` tells, from the channel's `no_ack_consumers`)."""
    consumers = getattr(message.channel, "no_ack_consumers", None)
    tag = (message.delivery_info or {}).get("consumer_tag")
    return consumers is not None and tag in consumers


_TEXT_HEADERS = ("id", "task")
_OPTIONAL_TEXT_HEADERS = (
    "shadow",
    "root_id",
    "parent_id",
    "group",
    "argsrepr",
    "kwargsrepr",
    "reply_to",
    "correlation_id",
    "origin",
    "lang",
    "eta",
    "expires",
)
_OPTIONAL_COUNT_HEADERS = ("retries", "replaced_task_nesting", "group_index")


def header_problem(headers: Any) -> str | None:
    """What is wrong with the shape of a task message's headers, or None.

    The headers of protocol 2 that Celery's worker reads in its main process,
    each of the type Celery's own clients send. Anything else is a message
    no client of this service made.
    """
    if not isinstance(headers, dict):
        return "no headers" if headers is None else f"headers of type {type(headers).__name__}"
    for name in _TEXT_HEADERS:
        if not isinstance(headers.get(name), str):
            return f"a {name!r} header that is not text"
    for name in _OPTIONAL_TEXT_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"a {name!r} header that is not text"
    for name in _OPTIONAL_COUNT_HEADERS:
        value = headers.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return f"a {name!r} header that is not a count"
    if headers.get("ignore_result") not in (None, True, False):
        return "an 'ignore_result' header that is not a boolean"
    for name in ("stamped_headers", "groups"):
        if headers.get(name) is not None and not isinstance(headers[name], list):
            return f"a {name!r} header that is not a list"
    if headers.get("stamps") is not None and not isinstance(headers["stamps"], dict):
        return "a 'stamps' header that is not an object"
    timelimit = headers.get("timelimit")
    if timelimit is not None and not _is_time_limits(timelimit):
        return "a 'timelimit' header that is not a pair of durations"
    return None


def _is_time_limits(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(
            limit is None
            or (type(limit) in (int, float) and 0 <= limit <= limits.task_header_time_limit_max_s)
            for limit in value
        )
    )


def x_death_problem(headers: Any) -> str | None:
    """What is wrong with a message's `x-death` header for the broker's dead-lettering, or None."""
    if not isinstance(headers, dict) or "x-death" not in headers:
        return None
    deaths = headers["x-death"]
    if not isinstance(deaths, list) or not all(
        isinstance(death, dict)
        and isinstance(death.get("queue"), str)
        and isinstance(death.get("reason"), str)
        and type(death.get("count", 0)) is int
        for death in deaths
    ):
        return "an x-death header that is not a list of death records"
    return None
