"""Liveness (`/healthz`) and readiness (`/readyz`: database and broker reachable).

`/readyz` also says whether events wait to be published (`billing.responses`
full, or the broker refusing them): the service still takes and applies
operations then, so it stays ready (200); the body tells the operator.
"""

from __future__ import annotations

import contextlib
from typing import Any

from marshmallow import Schema, fields

from api.bodies import Blueprint
from api.context import services
from billing import limits
from billing.adapters.backlog import outbox_backlog
from billing.adapters.database import database_reachable

blp = Blueprint("health", __name__, description="Liveness and readiness (no token needed)")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessChecksSchema(Schema):
    database = fields.Boolean(required=True, metadata={"example": True})
    broker = fields.Boolean(required=True, metadata={"example": True})


class WaitingEventsSchema(Schema):
    waiting = fields.Boolean(
        required=True,
        metadata={
            "description": "Events wait unpublished longer than their publish takes: "
            "billing.responses is full (nobody reads it) or the broker refuses them; "
            "they are kept in the database and published once it takes them",
            "example": False,
        },
    )
    outbox_backlog = fields.Integer(
        required=True,
        metadata={"description": "Unpublished events, counted up to 100000", "example": 0},
    )
    oldest_unpublished_age_s = fields.Float(required=True, metadata={"example": 0.0})


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "unavailable"], "example": "ok"})
    checks = fields.Nested(ReadinessChecksSchema, required=True)
    events = fields.Nested(
        WaitingEventsSchema,
        metadata={"description": "Absent while the database is unreachable"},
    )


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema, description="The process is up")
def healthz() -> dict[str, Any]:
    """Liveness: the API process answers."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200, ReadinessSchema, description="The database and the broker are reachable")
@blp.alt_response(
    503,
    schema=ReadinessSchema,
    description="The database or the broker is unreachable",
    example={"status": "unavailable", "checks": {"database": True, "broker": False}},
)
def readyz() -> tuple[dict[str, Any], int]:
    """Readiness: the database and the broker are reachable; and whether events wait."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["database"]:
        with contextlib.suppress(Exception):
            body["events"] = _waiting_events()
    return body, 200 if ready else 503


def _waiting_events() -> dict[str, Any]:
    found = outbox_backlog(services().engine, count_max=limits.readyz_backlog_count_max)
    return {
        "waiting": found.waiting,
        "outbox_backlog": found.events,
        "oldest_unpublished_age_s": round(found.oldest_age_s, 3),
    }


def _database_ok() -> bool:
    return database_reachable(services().engine)


def _broker_ok() -> bool:
    return services().task_queue.broker_reachable()
