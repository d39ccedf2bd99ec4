"""The account locks, the account read and the ledger sequence numbers: one round trip."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from billing.adapters.ledger_db import SqlUnitOfWork


@pytest.fixture
def engine(workerless_engine: Any) -> Any:
    return workerless_engine


def test_the_accounts_that_exist_and_as_many_ascending_numbers_as_asked(engine: Any) -> None:
    with SqlUnitOfWork(engine) as uow:
        accounts, seqs = uow.ledger.lock_and_get_accounts(["alice", "bob", "nobody"], ledger_seqs=5)
        _, later = uow.ledger.lock_and_get_accounts(["alice"], ledger_seqs=2)

    assert sorted(accounts) == ["alice", "bob"]
    assert (accounts["alice"].currency, accounts["alice"].posted) == ("USD", 0)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert min(later) > max(seqs)


def test_no_numbers_asked_and_no_account_found(engine: Any) -> None:
    with SqlUnitOfWork(engine) as uow:
        assert uow.ledger.lock_and_get_accounts(["nobody"], ledger_seqs=0) == ({}, [])
        accounts, seqs = uow.ledger.lock_and_get_accounts([], ledger_seqs=1)
    assert accounts == {} and len(seqs) == 1


def test_the_numbers_are_taken_once_the_locks_are_held(engine: Any) -> None:
    """A transaction that waited for an account is numbered after the one it waited for,
    and after a transaction on other accounts that began while it waited."""
    first = SqlUnitOfWork(engine)
    with first:
        _, (first_seq,) = first.ledger.lock_and_get_accounts(["alice"], ledger_seqs=1)
        waited: list[int] = []

        def wait_for_alice() -> None:
            with SqlUnitOfWork(engine) as uow:
                waited.extend(uow.ledger.lock_and_get_accounts(["alice"], ledger_seqs=1)[1])

        waiter = threading.Thread(target=wait_for_alice)
        waiter.start()
        time.sleep(0.3)  # the waiter is now blocked on alice's lock
        assert waited == []
        with SqlUnitOfWork(engine) as other:
            _, (other_seq,) = other.ledger.lock_and_get_accounts(["bob"], ledger_seqs=1)
        first.commit()
    waiter.join(timeout=10)

    assert first_seq < other_seq < waited[0]


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_the_wait_for_the_locks_and_the_time_they_were_held_are_measured(engine: Any) -> None:
    names = [
        f"billing_ledger_{metric}_seconds_{part}"
        for metric in ("lock_wait", "locks_held")
        for part in ("count", "sum")
    ]
    before = {name: sample(name) for name in names}
    holder = SqlUnitOfWork(engine)
    with holder:
        holder.ledger.lock_and_get_accounts(["alice"], ledger_seqs=0)

        def wait_for_alice() -> None:
            with SqlUnitOfWork(engine) as uow:  # rolled back: its hold ends there
                uow.ledger.lock_and_get_accounts(["alice"], ledger_seqs=0)

        waiter = threading.Thread(target=wait_for_alice)
        waiter.start()
        time.sleep(0.3)
        holder.commit()
    waiter.join(timeout=10)
    grew = {name: sample(name) - before[name] for name in names}

    assert grew["billing_ledger_lock_wait_seconds_count"] == 2
    assert grew["billing_ledger_lock_wait_seconds_sum"] >= 0.2  # the waiter waited ~0.3 s
    assert grew["billing_ledger_locks_held_seconds_count"] == 2  # committed, and rolled back
    assert grew["billing_ledger_locks_held_seconds_sum"] >= 0.3  # the holder's hold
