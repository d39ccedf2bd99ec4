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


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = [
            f"{__name__}:ClusterDelayedDelivery" if step.endswith(":DelayedDelivery") else step
            for step in Consumer.Blueprint.default_steps
        ]

    def on_decode_error(self, message: Any, exc: Exception) -> None:
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
