"""Liveness (`/healthz`) and readiness (`/readyz`: database and broker reachable)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from api.bodies import Blueprint
from api.context import services
from billing.adapters.database import database_reachable

blp = Blueprint("health", __name__, description="Liveness and readiness (no token needed)")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessChecksSchema(Schema):
    database = fields.Boolean(required=True, metadata={"example": True})
    broker = fields.Boolean(required=True, metadata={"example": True})


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "unavailable"], "example": "ok"})
    checks = fields.Nested(ReadinessChecksSchema, required=True)


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
    """Readiness: the database and the broker are reachable."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def _database_ok() -> bool:
    return database_reachable(services().engine)


def _broker_ok() -> bool:
    return services().task_queue.broker_reachable()
