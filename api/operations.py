"""Operations over HTTP: accepted now (202), applied by the workers, read back by id."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import RAISE

from api.bodies import Blueprint
from api.context import json_response, path_identifier, services
from api.errors import ApiError
from billing import limits, logs
from billing.adapters import metrics, views
from billing.adapters.schemas import (
    BatchResultSchema,
    BatchSchema,
    CreditSchema,
    DebitSchema,
    ErrorSchema,
    OperationSchema,
    ReversalSchema,
    TransferSchema,
    WaitQuerySchema,
    parse_operation,
)
from billing.domain import Operation, OperationType, Status
from billing.ports import OperationRecord
from billing.representation import render_operation
from billing.service import Acceptance, accept_and_enqueue

blp = Blueprint("operations", __name__, url_prefix="/v1", description="Operations")


def submit(operation_type: OperationType, body: dict[str, Any]) -> Response:
    """Record the operation and enqueue it; a retry answers its current state."""
    request = dict(body)
    operation = Operation(request.pop("operation_id"), operation_type, request)
    logs.current_operation_id.set(operation.operation_id)
    # Recorded and enqueued together with the other requests of this moment;
    # if the enqueue fails the client gets a 503 and the recovery sweep
    # enqueues the recorded operation later.
    outcome, record = services().acceptor.submit(operation)
    metrics.operations_accepted.labels(operation_type.value, outcome.value).inc()
    if outcome is Acceptance.conflict:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"operation {operation.operation_id} was already submitted with another body",
        )
    return json_response(render_operation(record), 202 if outcome is Acceptance.accepted else 200)


def register_operation_route(
    blueprint: Blueprint,
    path: str,
    operation_type: OperationType,
    schema: type,
    path_field: str | None = None,
) -> None:
    """A POST route that accepts one operation type; `path_field` comes from the URL."""

    def post(body: dict[str, Any], **path: str) -> Response:
        if path_field is not None:
            body = {**body, path_field: path_identifier(path[path_field], path_field)}
        return submit(operation_type, body)

    post.__doc__ = f"Submit a {operation_type.value}; it is applied asynchronously."
    post.__name__ = f"submit_{operation_type.value}"
    view = blueprint.arguments(schema())(post)
    view = blueprint.alt_response(
        200, schema=OperationSchema, description="A retry of an already accepted operation"
    )(view)
    view = blueprint.alt_response(409, schema=ErrorSchema, description="idempotency_conflict")(view)
    view = blueprint.alt_response(422, schema=ErrorSchema, description="validation_error")(view)
    view = blueprint.response(202, OperationSchema, description="Accepted, pending")(view)
    blueprint.route(path, methods=["POST"])(view)


register_operation_route(blp, "/credits", OperationType.credit, CreditSchema)
register_operation_route(blp, "/debits", OperationType.debit, DebitSchema)
register_operation_route(blp, "/transfers", OperationType.transfer, TransferSchema)
register_operation_route(blp, "/reversals", OperationType.reversal, ReversalSchema)


@blp.route("/operations/batch", methods=["POST"])
@blp.arguments(BatchSchema())
@blp.response(202, BatchResultSchema, description="Every item with its own result")
@blp.alt_response(422, schema=ErrorSchema, description="validation_error of the batch itself")
def submit_batch(body: dict[str, Any]) -> Response:
    """Submit up to 1,000 operations of any type at once.

    The batch is not atomic: each operation is validated, recorded and
    applied on its own terms and gets its own result (accepted, repeated,
    idempotency_conflict or validation_error) and outcome. The valid ones
    are recorded together, in one transaction, before the answer. The batch
    is ordered: each operation it records is applied after every one before
    it in the batch, so it sees their effects (a transfer can spend a credit
    earlier in the same batch).
    """
    parsed = [parse_operation(item) for item in body["operations"]]
    operations = [
        Operation(fields.pop("operation_id"), OperationType(operation_type), fields)
        for operation_type, fields in (p for p in parsed if isinstance(p, tuple))
    ]
    accepted = accept_and_enqueue(
        operations, services().uow(), services().task_queue.enqueue_operations, as_batch=True
    )
    results = iter(accepted)
    items = []
    counts: Counter[tuple[str, str]] = Counter()
    for raw, item in zip(body["operations"], parsed, strict=True):
        if isinstance(item, dict):
            operation_id = raw.get("operation_id") if isinstance(raw, dict) else None
            items.append(
                {
                    "operation_id": operation_id if isinstance(operation_id, str) else None,
                    "result": "validation_error",
                    "operation": None,
                    "error": item,
                }
            )
            continue
        outcome, record = next(results)
        counts[record.operation.type.value, outcome.value] += 1
        items.append(_batch_item(outcome, record))
    for (operation_type, outcome_name), count in counts.items():
        metrics.operations_accepted.labels(operation_type, outcome_name).inc(count)
    return json_response({"items": items}, 202)


def _batch_item(outcome: Acceptance, record: OperationRecord) -> dict[str, Any]:
    operation_id = record.operation.operation_id
    if outcome is Acceptance.conflict:
        error = {
            "code": "idempotency_conflict",
            "message": f"operation {operation_id} was already submitted with another body",
        }
        return {
            "operation_id": operation_id,
            "result": "idempotency_conflict",
            "operation": None,
            "error": error,
        }
    return {
        "operation_id": operation_id,
        "result": outcome.value,
        "operation": render_operation(record),
        "error": None,
    }


@blp.route("/operations/<operation_id>")
class OperationView(MethodView):
    @blp.arguments(WaitQuerySchema(), location="query", unknown=RAISE)
    @blp.response(200, OperationSchema)
    def get(self, query: dict[str, Any], operation_id: str) -> dict[str, Any]:
        """An operation and its outcome, waiting up to `wait` seconds for it to finish."""
        path_identifier(operation_id, "operation_id")
        record = wait_for_operation(operation_id, float(query["wait"]))
        return render_operation(record)


def wait_for_operation(operation_id: str, wait_s: float) -> OperationRecord:
    engine = services().engine
    deadline = time.monotonic() + wait_s
    pause_ms = limits.operation_wait_poll_min_ms
    while True:
        record = views.get_operation(engine, operation_id)
        if record is None:
            raise ApiError(404, "not_found", f"operation {operation_id} does not exist")
        remaining_s = deadline - time.monotonic()
        if record.operation.status is not Status.pending or remaining_s <= 0:
            return record
        time.sleep(min(pause_ms / 1000, remaining_s))
        pause_ms = min(pause_ms * 2, limits.operation_wait_poll_max_ms)
