"""The in-memory ledger the service-layer tests drive."""

from __future__ import annotations

import pytest

from tests.unit.service_driver import Service


@pytest.fixture
def ledger() -> Service:
    return Service()
