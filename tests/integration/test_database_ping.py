"""A pooled connection is pinged only after it sat idle; a dead one is replaced or fails
as an outage, never as a wrong answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from billing.adapters.database import make_engine
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.ports import TransientError
from tests.support import stack


@pytest.fixture
def url() -> Iterator[str]:
    settings = stack.make_settings()
    stack.prepare_database(settings)
    yield settings.database_url
    stack.drop_database(settings)


def counting_pings(engine: Engine) -> list[None]:
    pings: list[None] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(None)
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(url: str, pid: int) -> None:
    other = make_engine(url, pool_size=1)
    with other.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()
    other.dispose()


def test_a_connection_used_again_soon_is_not_pinged(url: str) -> None:
    engine = make_engine(url, pool_size=1, ping_after_idle_s=60)
    pings = counting_pings(engine)
    first = backend(engine)
    assert [backend(engine) for _ in range(20)] == [first] * 20
    assert pings == []
    engine.dispose()


def test_a_connection_that_died_while_idle_is_pinged_and_replaced(url: str) -> None:
    engine = make_engine(url, pool_size=1, ping_after_idle_s=0)
    pings = counting_pings(engine)
    first = backend(engine)
    terminate(url, first)
    # The ping finds it dead: the pool connects again and the statement runs.
    second = backend(engine)
    assert second != first and len(pings) == 1
    engine.dispose()


def test_a_connection_that_died_while_in_use_fails_as_an_outage_then_the_pool_recovers(
    url: str,
) -> None:
    engine = make_engine(url, pool_size=1, ping_after_idle_s=60)
    first = backend(engine)
    terminate(url, first)
    with pytest.raises(TransientError), SqlUnitOfWork(engine) as uow:
        uow.connection.execute(text("SELECT 1"))
    assert backend(engine) != first
    engine.dispose()
