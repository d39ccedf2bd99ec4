"""The AMQP intake: operations published as JSON to `billing.requests`, consumed by the worker.

A consumer bootstep in the worker's main process validates each message with
the same gate as the HTTP API (`billing.gate`). A valid one is handed to the
`submit_request` task (confirmed publish, then ack), which checks it again
(anyone may put that task on the queue), records and applies it like an HTTP
request. An invalid one is answered with a `request.rejected` event and
rejected to `billing.requests.dead`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from celery import Task, bootsteps
from kombu import Consumer, Message

from billing import gate, limits, service
from billing.adapters.celery_client import SUBMIT_REQUEST_TASK
from billing.adapters.events import Topology
from billing.adapters.schemas import parse_operation
from billing.domain import Operation, OperationType
from billing.ports import Event, TransientError
from billing.service import Acceptance
from tasks.celery_app import app
from tasks.context import event_publisher, services
from tasks.ledger import apply_and_publish, retry_countdown_s

log = logging.getLogger(__name__)

INTAKE_PREFETCH = 64


def parse_request(body: bytes | str) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """(type, validated fields) for a good message, or the error for a bad one."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return {"code": "validation_error", "message": "The message is not JSON."}
    return parse_operation(message)


def rejection_event(error: dict[str, Any], body: bytes | str) -> Event:
    raw = body.encode() if isinstance(body, str) else body
    try:
        original: Any = json.loads(raw)
    except (ValueError, RecursionError):
        original = raw.decode("utf-8", errors="replace")
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return Event(
        message_id=f"rejected:{digest}",
        routing_key="request.rejected",
        body={"error": error, "message": original, "schema_version": 1},
    )


class RequestIntake(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes `billing.requests` inside the worker."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        topology = Topology(services().settings)
        consumer = Consumer(
            channel,
            queues=[topology.requests_queue],
            on_message=self.on_message,
            no_ack=False,
            prefetch_count=INTAKE_PREFETCH,
        )
        return [consumer]

    def on_message(self, message: Message) -> None:
        parsed = parse_request(message.body)
        if isinstance(parsed, dict):
            log.warning(
                "intake: rejected a request: %s", parsed.get("details") or parsed["message"]
            )
            event_publisher().publish([rejection_event(parsed, message.body)])
            message.reject(requeue=False)
            return
        kind, fields = parsed
        app.send_task(SUBMIT_REQUEST_TASK, args=[kind, fields])
        message.ack()


app.steps["consumer"].add(RequestIntake)


@app.task(bind=True, name=SUBMIT_REQUEST_TASK, max_retries=None)
def submit_request(self: Task, kind: object, fields: object) -> str:
    """Record an operation that came over AMQP, then apply it like the ledger task does.

    Whoever put the task on the queue (the intake, Flower's task API, anyone
    with the broker's password), its arguments pass the gate first: a
    request that breaks the rules is parked like a bad intake message (a
    `request.rejected` event and `billing.requests.dead`), and nothing of
    it is recorded or applied.
    """
    problems = gate.check_request(kind, fields)
    if problems:
        log.warning("submit_request: refused arguments: %s", problems)
        error = {"code": "validation_error", "message": "The request is not valid."}
        _park(kind, fields, {**error, "details": problems}, "validation_error")
        return "rejected"
    assert isinstance(kind, str) and isinstance(fields, dict)
    request = dict(fields)
    operation = Operation(request.pop("operation_id"), OperationType(kind), request)
    try:
        outcome, _ = service.accept_operation(operation, services().uow())
    except TransientError as error:
        raise self.retry(countdown=retry_countdown_s(self.request.retries), exc=error) from error
    if outcome is Acceptance.conflict:
        conflict = {
            "code": "idempotency_conflict",
            "message": f"operation {operation.operation_id} was submitted with another body",
        }
        _park(kind, fields, conflict, "idempotency_conflict")
        return "conflict"
    return apply_and_publish(self, [operation.operation_id])


def _park(kind: object, fields: object, error: dict[str, Any], reason: str) -> None:
    """Publish `request.rejected` and dead-letter the request as an intake message would be."""
    original = _as_sent(kind, fields)
    publisher = event_publisher()
    publisher.publish([rejection_event(error, original)])
    publisher.dead_letter_request(original, {"x-rejection": reason})


def _as_sent(kind: object, fields: object) -> bytes:
    """The request as an intake message carries it, or the arguments as they came."""
    message = {"type": kind, **fields} if isinstance(fields, dict) else [kind, fields]
    try:
        return json.dumps(message).encode()
    except (TypeError, ValueError, RecursionError):
        named = kind[: limits.identifier_length_max] if isinstance(kind, str) else None
        return json.dumps({"type": named, "fields": "not encodable"}).encode()
