"""Fixtures of the integration tests that need a ledger no worker applies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing import service
from billing.adapters.ledger_db import SqlUnitOfWork
from billing.domain import NewAccount
from tests.support import stack


@pytest.fixture
def workerless_engine() -> Iterator[Any]:
    """A database of its own with two accounts, alice and bob, and no worker running."""
    settings = stack.make_settings()
    stack.prepare_database(settings)
    engine = stack.engine_for(settings)
    for account in ("alice", "bob"):
        service.open_account(NewAccount(account, "USD"), SqlUnitOfWork(engine))
    yield engine
    engine.dispose()
    stack.drop_database(settings)
