"""The client's copy of the contract's names (it may not import the service) matches the service."""

from __future__ import annotations

import billing_client.models as client
from billing import domain


def test_the_client_knows_every_error_code_the_service_gives_and_no_other() -> None:
    service = {code.value for code in domain.ErrorCode}
    assert {code.value for code in client.ErrorCode} == service


def test_the_client_knows_every_status() -> None:
    assert {s.value for s in client.Status} == {s.value for s in domain.Status}
