"""Liveness (`/healthz`) and readiness (`/readyz`: database and broker reachable)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import text

from api.context import services

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@blp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def _database_ok() -> bool:
    try:
        with services().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _broker_ok() -> bool:
    return services().task_queue.broker_reachable()
