"""The AMQP intake: operations published as JSON to `billing.requests`, consumed by the worker.

A consumer bootstep in the worker's main process validates each message with
the same gate as the HTTP API (`billing.gate`). A valid one is handed to the
`submit_request` task (confirmed publish, then ack), which checks it again
(anyone may put that task on the queue), records and applies it like an HTTP
request. An invalid one (not JSON, larger than `intake_message_bytes_max`,
nested deeper than `json_depth_max`, a key given twice, a bad field, ...) is
answered with a `request.rejected` event and rejected to
`billing.requests.dead`. No message stops the consumer: see `RequestIntake`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from celery import Task, bootsteps

from billing import gate, limits, service, untrusted_json
from billing.adapters import metrics
from billing.adapters.celery_client import SUBMIT_REQUEST_TASK
from billing.adapters.events import Topology
from billing.adapters.intake_consumer import (
    BrokerOperationalError,
    Message,
    intake_consumer,
    is_kombu_message,
)
from billing.adapters.schemas import parse_operation
from billing.domain import Operation, OperationType
from billing.ports import Event, TransientError
from billing.service import Acceptance
from tasks.celery_app import app, event_publisher
from tasks.consumer import x_death_problem
from tasks.context import services
from tasks.ledger import apply_and_publish, retry_countdown_s

log = logging.getLogger(__name__)


def parse_request(body: bytes | str) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """(type, validated fields) for a good message, or the error for a bad one."""
    try:
        message = untrusted_json.parse(body, bytes_max=limits.intake_message_bytes_max)
    except untrusted_json.JsonRefused as refusal:
        return {
            "code": "validation_error",
            "message": "The message is not JSON the intake accepts.",
            "details": {"_body": [str(refusal)]},
        }
    return parse_operation(message)


def rejection_event(error: dict[str, Any], body: bytes | str) -> Event:
    """The `request.rejected` event: the error, and the message as text (cut at a limit).

    The message is carried as its text (UTF-8, anything else replaced by
    U+FFFD), not as the JSON value it may hold: a value can be nested too
    deep to encode again. The body is rendered here as ASCII JSON, so no
    text in it, not even a lone surrogate in a key that the error names,
    can fail to encode on the way to the broker.
    """
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    text = raw.decode("utf-8", errors="replace")
    kept = limits.rejected_message_chars_max
    digest = hashlib.sha256(raw).hexdigest()[:32]
    rendered = json.dumps(
        {
            "error": error,
            "message": text[:kept],
            "message_truncated": len(text) > kept,
            "schema_version": 1,
        },
        ensure_ascii=True,
        separators=(",", ":"),
        sort_keys=True,
    )
    return Event(message_id=f"rejected:{digest}", routing_key="request.rejected", body=rendered)


class RequestIntake(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes `billing.requests` inside the worker.

    No message stops it: a message that cannot be read, or whose handling
    raises anything but a broker outage, is parked in `billing.requests.dead`
    (logged at error level and counted in `billing_intake_messages_parked_total`)
    and the next one is taken. During an outage of the broker a message is
    given back, and the broker dead-letters it after its delivery limit.
    """

    def get_consumers(self, channel: Any) -> list[Any]:
        consumer = intake_consumer(
            channel,
            Topology(services().settings),
            on_message=self.on_message,
            on_unreadable=self.on_unreadable,
            prefetch_count=limits.intake_prefetch_count,
        )
        return [consumer]

    def on_message(self, message: Message) -> None:
        try:
            handle_request(message)
        except (TransientError, BrokerOperationalError) as error:
            log.warning("intake: the broker failed; the message is given back: %s", error)
            if not message.acknowledged:
                message.requeue()
        except Exception:
            log.exception("intake: handling a message failed; it is parked in the dead letters")
            park(message, "error")

    def on_unreadable(self, message: Message, error: Exception) -> None:
        """kombu could not make a message of what the broker delivered."""
        log.error("intake: a message could not be read (%r); it is parked", error)
        park(message, "unreadable")


def handle_request(message: Message) -> None:
    if getattr(message, "compression", None) is not None:
        parsed: tuple[str, dict[str, Any]] | dict[str, Any] = {
            "code": "validation_error",
            "message": "The message is not JSON the intake accepts.",
            "details": {"_body": ["A compressed body is not accepted; publish plain JSON."]},
        }
    else:
        parsed = parse_request(message.body)
    if isinstance(parsed, dict):
        log.warning("intake: rejected a request: %s", parsed.get("details") or parsed["message"])
        event_publisher().publish([rejection_event(parsed, message.body)])
        dead_letter(message, "validation_error")
        return
    operation_type, fields = parsed
    app.send_task(SUBMIT_REQUEST_TASK, args=[operation_type, fields])
    message.ack()


def park(message: Any, reason: str) -> None:
    """Dead-letter a message that was not acknowledged yet, and count it.

    Called where nothing else would catch what it raises: should the broker
    fail meanwhile, the message is given back instead (its connection is
    likely gone, and then the broker gives it back itself).
    """
    metrics.intake_messages_parked.labels(reason).inc()
    try:
        _park_message(message, reason)
    except (TransientError, BrokerOperationalError, OSError) as error:
        log.warning("intake: could not park a message, the broker failed: %s", error)


def _park_message(message: Any, reason: str) -> None:
    if is_kombu_message(message):
        if not message.acknowledged:
            dead_letter(message, reason)
    elif not _carries_x_death(message.properties.get("application_headers")):
        # What py-amqp delivered, when kombu failed to make a message of it.
        message.channel.basic_reject(message.delivery_tag, requeue=False)
    else:
        event_publisher().dead_letter_request(bytes(message.body), {"x-rejection": reason})
        message.channel.basic_ack(message.delivery_tag)


def dead_letter(message: Message, reason: str) -> None:
    """Reject a message to `billing.requests.dead`, or park a copy when the broker must not.

    RabbitMQ 3.10 reads a message's `x-death` header when it dead-letters
    it, and one that is not a list of death records crashes its at-least-once
    dead-lettering for every queue of the node until it restarts (seen with
    3.10.8). A message from outside has no reason to carry one: any that
    does is parked here as a copy without it (the body as it came), and
    acknowledged; the broker's own dead-lettering never reads it.
    """
    if not _carries_x_death(message.headers):
        message.reject(requeue=False)
        return
    log.error(
        "intake: a message carrying an x-death header (%s) is parked as a copy without it",
        x_death_problem(message.headers) or "well formed",
    )
    event_publisher().dead_letter_request(message.body, {"x-rejection": reason})
    message.ack()


def _carries_x_death(headers: Any) -> bool:
    return isinstance(headers, dict) and "x-death" in headers


app.steps["consumer"].add(RequestIntake)


@app.task(bind=True, name=SUBMIT_REQUEST_TASK, max_retries=None)
def submit_request(self: Task, operation_type: object, fields: object) -> str:
    """Record an operation that came over AMQP, then apply it like the ledger task does.

    Whoever put the task on the queue (the intake, Flower's task API, anyone
    with the broker's password), its arguments pass the gate first: a
    request that breaks the rules is parked like a bad intake message (a
    `request.rejected` event and `billing.requests.dead`), and nothing of
    it is recorded or applied.
    """
    problems = gate.check_request(operation_type, fields)
    if problems:
        log.warning("submit_request: refused arguments: %s", problems)
        error = {"code": "validation_error", "message": "The request is not valid."}
        _park(operation_type, fields, {**error, "details": problems}, "validation_error")
        return "rejected"
    assert isinstance(operation_type, str) and isinstance(fields, dict)
    request = dict(fields)
    operation = Operation(request.pop("operation_id"), OperationType(operation_type), request)
    try:
        outcome, _ = service.accept_operation(operation, services().uow())
    except TransientError as error:
        raise self.retry(countdown=retry_countdown_s(self.request.retries), exc=error) from error
    if outcome is Acceptance.conflict:
        conflict = {
            "code": "idempotency_conflict",
            "message": f"operation {operation.operation_id} was submitted with another body",
        }
        _park(operation_type, fields, conflict, "idempotency_conflict")
        return "conflict"
    return apply_and_publish(self, [operation.operation_id])


def _park(operation_type: object, fields: object, error: dict[str, Any], reason: str) -> None:
    """Publish `request.rejected` and dead-letter the request as an intake message would be."""
    original = _as_sent(operation_type, fields)
    publisher = event_publisher()
    publisher.publish([rejection_event(error, original)])
    publisher.dead_letter_request(original, {"x-rejection": reason})


def _as_sent(operation_type: object, fields: object) -> bytes:
    """The request as an intake message carries it, or the arguments as they came."""
    message = (
        {"type": operation_type, **fields} if isinstance(fields, dict) else [operation_type, fields]
    )
    try:
        return json.dumps(message).encode()
    except (TypeError, ValueError, RecursionError):
        named = (
            operation_type[: limits.identifier_length_max]
            if isinstance(operation_type, str)
            else None
        )
        return json.dumps({"type": named, "fields": "not encodable"}).encode()
