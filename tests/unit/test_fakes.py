"""The in-memory unit of work keeps the transaction semantics the service layer relies on."""

from __future__ import annotations

import pytest

from billing.domain import NewAccount
from billing.ports import UnitOfWork
from tests.unit.fakes import FakeUnitOfWork


def open_alice(uow: UnitOfWork) -> None:
    uow.ledger.create_account(NewAccount("alice", "USD"))


def test_writes_are_seen_by_others_only_once_committed() -> None:
    uow = FakeUnitOfWork()
    with uow:
        open_alice(uow)
        assert "alice" not in uow.committed.accounts
        uow.commit()
    assert "alice" in uow.committed.accounts


def test_writes_of_a_unit_of_work_left_without_a_commit_are_dropped() -> None:
    uow = FakeUnitOfWork()
    with uow:
        open_alice(uow)
    assert "alice" not in uow.committed.accounts
    assert uow.rollbacks == 1


def test_writes_of_a_unit_of_work_left_by_an_exception_are_dropped() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(RuntimeError), uow:
        open_alice(uow)
        raise RuntimeError("a bug")
    assert "alice" not in uow.committed.accounts


def test_a_unit_of_work_used_after_its_commit_fails_loudly() -> None:
    uow = FakeUnitOfWork()
    with uow:
        uow.commit()
        with pytest.raises(AssertionError, match="after its commit"):
            open_alice(uow)
        with pytest.raises(AssertionError, match="after its commit"):
            uow.commit()


def test_a_unit_of_work_opened_inside_itself_or_used_outside_with_fails_loudly() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(AssertionError, match="inside `with`"):
        open_alice(uow)
    with uow, pytest.raises(AssertionError, match="inside itself"), uow:
        pass
