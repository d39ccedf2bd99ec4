"""Timestamps are UTC whatever time zone the database server or database is set to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from billing import representation, service
from billing.adapters import views
from billing.adapters.database import make_engine
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import Operation, OperationType


def test_operations_read_back_in_utc_on_a_database_set_to_another_zone(
    workerless_engine: Any,
) -> None:
    url = workerless_engine.url.render_as_string(hide_password=False)
    with workerless_engine.connect() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar_one()
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Tokyo'"))
        connection.commit()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
        request = {"account_id": "alice", "amount": 100}
        service.accept_operation(
            Operation("c1", OperationType.credit, request), SqlUnitOfWork(engine)
        )
        (applied,) = service.apply_operations(["c1"], SqlUnitOfWork(engine))
        assert applied.record is not None
        record = views.get_operation(engine, "c1")
        assert record is not None
        # What the worker wrote from its own clock is what is read back, to the byte.
        rendered = representation.render_operation(record)
        assert rendered == representation.render_operation(applied.record)
        assert rendered["accepted_at"].endswith("+00:00")
        assert rendered["completed_at"].endswith("+00:00")
    finally:
        engine.dispose()
