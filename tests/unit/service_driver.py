"""Drives the service layer against the in-memory unit of work, as the API and the workers do."""

from __future__ import annotations

from typing import Any

from billing import service
from billing.domain import NewAccount, Operation, OperationType, Status
from billing.ports import OperationRecord
from billing.service import Acceptance, Applied
from tests.unit.fakes import FakeClock, FakePublisher, FakeUnitOfWork, assert_ledger_consistent


class Service:
    """One in-memory ledger: accept and apply operations, read what they left."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.uow = FakeUnitOfWork(self.clock)
        self.publisher = FakePublisher()
        self.enqueued: list[list[str]] = []

    # --- doors --------------------------------------------------------------

    def open(self, account_id: str, currency: str = "USD", overdraft_limit: int = 0) -> str:
        outcome, _ = service.open_account(
            NewAccount(account_id, currency, overdraft_limit), self.uow
        )
        assert outcome is Acceptance.accepted
        return account_id

    def funded(self, account_id: str, amount: int, **account: Any) -> str:
        self.open(account_id, **account)
        if amount:
            funding = self.run("credit", f"fund-{account_id}", account_id=account_id, amount=amount)
            assert funding.operation.status is Status.succeeded, funding
        return account_id

    def accept(self, kind: str, operation_id: str, **request: Any) -> Acceptance:
        operation = Operation(operation_id, OperationType(kind), request)
        return service.accept_operation(operation, self.uow)[0]

    def accept_batch(self, operations: list[Operation]) -> list[str]:
        service.accept_operations(operations, self.uow, as_batch=True)
        return [o.operation_id for o in operations]

    def apply(self, *operation_ids: str) -> list[Applied]:
        return service.apply_operations(list(operation_ids), self.uow, self.clock)

    def run(self, kind: str, operation_id: str, **request: Any) -> OperationRecord:
        """Accept the operation and apply it, as a request and its ledger task do."""
        self.accept(kind, operation_id, **request)
        self.apply(operation_id)
        return self.record(operation_id)

    def enqueue(self, operation_ids: list[str]) -> None:
        self.enqueued.append(list(operation_ids))

    # --- what the ledger holds -----------------------------------------------

    def record(self, operation_id: str) -> OperationRecord:
        return self.uow.committed.operations[operation_id]

    def outcome(self, operation_id: str) -> tuple[str, str | None]:
        record = self.record(operation_id)
        return record.operation.status.value, record.error_code

    def balances(self, account_id: str) -> tuple[int, int, int]:
        """(posted, held, available), as the API shows them."""
        account = self.uow.committed.accounts[account_id]
        return account.posted, account.held, account.available

    def entries_of(self, operation_id: str) -> list[tuple[str, str, int]]:
        return sorted(
            (e.account_id, str(e.bucket), e.amount)
            for e in self.uow.committed.entries
            if e.operation_id == operation_id
        )

    def hold(self, hold_id: str) -> tuple[str, int, int]:
        """(status, captured, remaining)."""
        hold = self.uow.committed.holds[hold_id]
        return hold.status.value, hold.captured, hold.remaining

    def unpublished(self) -> list[str]:
        store = self.uow.committed
        return [store.events[i].message_id for i in store.unpublished]

    def ledger_order(self) -> list[str]:
        records = [r for r in self.uow.committed.operations.values() if r.ledger_seq is not None]
        return [r.operation.operation_id for r in sorted(records, key=lambda r: r.ledger_seq or 0)]

    def check(self) -> None:
        assert_ledger_consistent(self.uow.committed)


def transfer(operation_id: str, source: str, destination: str, amount: int) -> Operation:
    request = {"source_account_id": source, "destination_account_id": destination, "amount": amount}
    return Operation(operation_id, OperationType.transfer, request)


def credit(operation_id: str, account_id: str, amount: int) -> Operation:
    request = {"account_id": account_id, "amount": amount}
    return Operation(operation_id, OperationType.credit, request)
