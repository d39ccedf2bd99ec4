"""Structured logs: one JSON object per line, with the operation id wherever one applies.

`BILLING_LOG_FORMAT=text` switches to readable lines for local use, and
`BILLING_LOG_LEVEL` (default `INFO`) sets how much is logged. The
operation being handled is kept in a context variable, set by the API for a
request and by the worker for a task, and added to every line logged meanwhile.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from typing import Any

current_operation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_operation_id", default=None
)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# A record is one line, whatever text from a client it carries (a decoded
# `%0a` in a path would otherwise start a forged line): the control
# characters (C0, DEL, C1) and Unicode's line and paragraph separators are
# written as escapes. In text lines a backslash is doubled too, so an escape
# written here is told from the same characters sent by a client.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_TEXT_ESCAPES = {
    **{code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS},
    **{ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"},
}
# The standard library's JSON already escapes C0 (and the backslash); not DEL,
# C1 or the separators, which some readers take for line breaks.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in _CONTROLS if code >= 0x7F}


def one_line(text: str) -> str:
    """The text with its line breaks and other control characters written as escapes."""
    return text.translate(_TEXT_ESCAPES)


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
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False).translate(_JSON_ESCAPES)


class TextFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line before any traceback, escaped; the traceback keeps its own lines."""
        text = super().formatMessage(record)
        operation_id = getattr(record, "operation_id", None) or current_operation_id.get()
        return one_line(f"{text} [operation_id={operation_id}]" if operation_id else text)


def make_formatter(component: str) -> logging.Formatter:
    if os.environ.get("BILLING_LOG_FORMAT", "json").strip().lower() == "text":
        return TextFormatter(component)
    return JsonFormatter(component)


class _ContextQueueHandler(logging.handlers.QueueHandler):
    """Hands records to a background thread, with the operation id of the caller's context."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        operation_id = getattr(record, "operation_id", None) or current_operation_id.get()
        if operation_id:
            record.operation_id = operation_id
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_listener: logging.handlers.QueueListener | None = None


def configure(component: str, level: str | None = None, *, background: bool = False) -> None:
    """Send the root logger's lines to stderr in the configured format and level.

    With `background`, request threads only queue their records and one
    thread formats and writes them, so many threads never wait on each
    other (or on a slow stderr) to log.
    """
    global _listener
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(component))
    _stop_listener()
    if background:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        _listener = logging.handlers.QueueListener(records, handler)
        _listener.start()
        handler = _ContextQueueHandler(records)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("BILLING_LOG_LEVEL", "INFO").strip().upper())


@atexit.register
def _stop_listener() -> None:
    """Write out what is queued and stop the thread; a stopped listener is never stopped again."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def reformat(logger: logging.Logger, component: str) -> None:
    """Give the handlers another library set up (Celery's) our formatter."""
    for handler in logger.handlers:
        handler.setFormatter(make_formatter(component))
