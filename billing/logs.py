"""Structured logs: one JSON object per line, with the operation id wherever one applies.

`BILLING_LOG_FORMAT=text` switches to readable lines for local use. The
operation being handled is kept in a context variable, set by the API for a
request and by the worker for a task, and added to every line logged meanwhile.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

current_operation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_operation_id", default=None
)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        operation_id = getattr(record, "operation_id", None) or current_operation_id.get()
        if operation_id:
            line["operation_id"] = operation_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in line and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        operation_id = getattr(record, "operation_id", None) or current_operation_id.get()
        return f"{text} [operation_id={operation_id}]" if operation_id else text


def make_formatter(component: str) -> logging.Formatter:
    if os.environ.get("BILLING_LOG_FORMAT", "json").strip().lower() == "text":
        return TextFormatter(component)
    return JsonFormatter(component)


def configure(component: str, level: str = "INFO") -> None:
    """Send the root logger's lines to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def reformat(logger: logging.Logger, component: str) -> None:
    """Give the handlers another library set up (Celery's) our formatter."""
    for handler in logger.handlers:
        handler.setFormatter(make_formatter(component))
