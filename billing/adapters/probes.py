"""Whether PostgreSQL, RabbitMQ, the API and a worker answer: the probes of `billing up`.

Each probe gives up after one short timeout and says why in words, never with
a traceback: a newcomer reads these reasons.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg2
from kombu import Connection
from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Probe:
    """What a probe found: `reachable` is False when nothing answered at the address."""

    ok: bool
    reachable: bool
    reason: str = ""


def database_display_url(database_url: str) -> str:
    """The URL as it can be shown: the password hidden."""
    return make_url(database_url).render_as_string(hide_password=True)


def broker_display_url(broker_url: str) -> str:
    return str(Connection(broker_url).as_uri(include_password=False))


def database_address(database_url: str) -> tuple[str, int]:
    url = make_url(database_url)
    return url.host or "127.0.0.1", url.port or 5432


def broker_address(broker_url: str) -> tuple[str, int]:
    connection = Connection(broker_url)
    return connection.hostname or "127.0.0.1", int(connection.port or 5672)


def probe_database(database_url: str, timeout_s: float) -> Probe:
    """Whether the PostgreSQL server of the URL lets its user in (the database may be missing)."""
    url = make_url(database_url)
    if url.host and not url.host.startswith("/"):
        unreachable = _tcp_problem(url.host, url.port or 5432, timeout_s)
        if unreachable:
            return Probe(ok=False, reachable=False, reason=unreachable)
    try:
        # The maintenance database, as `billing migrate` uses to create the service's own.
        connection = psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname="postgres",
            connect_timeout=max(1, int(timeout_s)),
        )
    except psycopg2.Error as error:
        return Probe(ok=False, reachable=True, reason=_first_line(error))
    connection.close()
    return Probe(ok=True, reachable=True)


def probe_broker(broker_url: str, timeout_s: float) -> Probe:
    """Whether RabbitMQ at the URL lets its user in."""
    host, port = broker_address(broker_url)
    unreachable = _tcp_problem(host, port, timeout_s)
    if unreachable:
        return Probe(ok=False, reachable=False, reason=unreachable)
    try:
        with Connection(broker_url, connect_timeout=timeout_s) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as error:  # kombu wraps the transport's errors in several types
        return Probe(ok=False, reachable=True, reason=_first_line(error))
    return Probe(ok=True, reachable=True)


def _tcp_problem(host: str, port: int, timeout_s: float) -> str:
    """Why nothing answers at host:port, or "" when something accepts a connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return (error.strerror or str(error)).lower()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def api_readiness(base_url: str, timeout_s: float) -> str:
    """ "" when the API's /readyz answers 200; otherwise what it is waiting for."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout_s):  # noqa: S310
            return ""
    except urllib.error.HTTPError as error:
        checks = _readiness_checks(error)
        down = [name for name, fine in checks.items() if not fine]
        return f"{' and '.join(down)} unreachable" if down else f"HTTP {error.code}"
    except (OSError, ValueError):
        return "not answering yet"


def api_waiting_events(base_url: str, timeout_s: float) -> str | None:
    """What /readyz says of events waiting to be published: "" when none wait, a sentence
    when some do, None when it does not say (the API or its database unreachable)."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout_s) as answer:  # noqa: S310
            events = json.loads(answer.read()).get("events")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(events, dict):
        return None
    if not events.get("waiting"):
        return ""
    return (
        f"{events.get('outbox_backlog')} events wait unpublished, the oldest for "
        f"{events.get('oldest_unpublished_age_s')} s: billing.responses is full (nobody "
        "reads it) or the broker refuses them; they are kept and published once it takes them"
    )


def _readiness_checks(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        checks = json.loads(error.read()).get("checks")
    except (ValueError, AttributeError, OSError):
        return {}
    return checks if isinstance(checks, dict) else {}


def worker_answers_ping(app: Any, worker_name: str, timeout_s: float) -> bool:
    """Whether the worker named `worker_name` (celery@host style) answers a Celery ping."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
            replies = app.control.ping(
                destination=[worker_name], timeout=timeout_s, connection=connection
            )
    except Exception:  # the broker is down or the connection broke: not yet
        return False
    return bool(replies)
