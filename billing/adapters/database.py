"""Engine construction and the translation of driver errors into the core's exceptions."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from billing import limits
from billing.adapters import jsoncodec
from billing.ports import InvalidData, LockBusy, TransientError

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
DATA_EXCEPTION_CLASS = "22"
INTEGRITY_VIOLATION_CLASS = "23"


def make_engine(
    database_url: str,
    *,
    pool_size: int = limits.database_pool_size_api,
    ping_after_idle_s: float = limits.database_ping_after_idle_s,
) -> Engine:
    """An engine whose sessions give up on a busy lock after `lock_wait_ms`.

    A pooled connection idle for `ping_after_idle_s` is pinged before it is
    handed out, and replaced if it died (a database restart): see
    `_ping_after_idle`.
    """
    options = (
        f"-c lock_timeout={limits.lock_wait_ms}ms "
        f"-c statement_timeout={limits.statement_timeout_ms}ms "
        f"-c idle_in_transaction_session_timeout={limits.idle_in_transaction_timeout_ms}ms "
        # Timestamps come back in UTC whatever the server's or database's
        # zone, as the contract shows them and as the workers' clock gives them.
        "-c timezone=UTC"
    )
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=limits.database_pool_wait_s,
        connect_args={"options": options, "connect_timeout": limits.database_connect_timeout_s},
        json_serializer=jsoncodec.dumps,
        json_deserializer=jsoncodec.loads,
    )
    _ping_after_idle(engine, ping_after_idle_s)
    return engine


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before handing it out, if it sat idle `idle_s` or longer.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip before
    every transaction, three per operation from the POST to its event (about
    a tenth of the worker's profile). A connection back in use within
    `idle_s` was alive then, and one that died since (the database
    restarted under load) fails its statement like any lost connection: the
    unit of work raises `TransientError` (retried, or `503`), and SQLAlchemy
    drops every connection of the pool made before. An idle one is pinged as
    SQLAlchemy pings (`Dialect.do_ping`); one that fails is replaced
    (`DisconnectionError`: the pool connects again), so after a quiet
    restart the first statement does not fail for a stale connection.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"a pooled connection died while idle: {error}") from error
        if not alive:
            raise DisconnectionError("a pooled connection died while idle")


def database_reachable(engine: Engine) -> bool:
    """Whether the database answers a query (the API's readiness)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def cooperate_with_gevent() -> bool:
    """Make psycopg2 wait for the server through gevent, when gevent has patched this process.

    The API's gunicorn workers serve requests in greenlets of one thread
    (`billing api`); a query that blocked the thread would stop every other
    request of the process until the server answered. psycogreen's wait
    callback yields to them instead. A process that gevent has not patched
    (the workers, the tests' app) keeps psycopg2's ordinary blocking calls.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    return True


def translate_error(error: BaseException) -> Exception | None:
    """The core's exception for a driver error, or None when it is not transient."""
    if isinstance(error, PoolTimeoutError):
        # Every pooled connection stayed busy: the process is overloaded, not broken.
        return TransientError(f"no database connection free: {error}")
    if not isinstance(error, DBAPIError):
        return None
    code = getattr(error.orig, "pgcode", None)
    if code == LOCK_NOT_AVAILABLE:
        return LockBusy(str(error.orig))
    if code in (QUERY_CANCELED, SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
        return TransientError(str(error.orig))
    if isinstance(error, OperationalError) or error.connection_invalidated:
        return TransientError(str(error.orig))
    if code is not None and code[:2] in (DATA_EXCEPTION_CLASS, INTEGRITY_VIOLATION_CLASS):
        return InvalidData(str(error.orig))
    return None


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise LockBusy or TransientError in place of the driver's transient errors."""
    try:
        yield
    except (DBAPIError, PoolTimeoutError) as error:
        translated = translate_error(error)
        if translated is None:
            raise
        raise translated from error


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL when it is missing; True when created."""
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": url.database}
            ).scalar()
            if not exists:
                connection.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
            return not exists
    finally:
        admin.dispose()
