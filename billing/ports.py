"""What the service layer needs from the outside world, as protocols and exceptions.

The adapters implement these against PostgreSQL and RabbitMQ; the service
functions take them as parameters, so the core never imports a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from billing.domain import AccountState, Entry, HoldState, NewAccount, Operation
from billing.reversals import ReversalTarget


class TransientError(Exception):
    """A fault that goes away on its own (database restart, lost connection): retry."""


class EventsRefused(TransientError):
    """The broker took none or only some of the events: `billing.responses` is full, or
    the broker blocks publishers (a resource alarm). The others stay unpublished in the
    outbox, for the relay; `published` are the ones it confirmed."""

    def __init__(self, message: str, published: list[Event]) -> None:
        super().__init__(message)
        self.published = published


class InvalidData(Exception):
    """The database refused what was written: a value out of range or a broken constraint.

    Not transient: the same write fails again. Raised for what an operation
    holds, it marks that operation as broken, not the transaction's others.
    """


class LockBusy(TransientError):
    """An account lock stayed busy past `limits.lock_wait_ms`: retry later."""


@dataclass(frozen=True)
class OperationRecord:
    operation: Operation
    error_code: str | None
    error_message: str | None
    balances: dict[str, dict[str, int]] | None
    accepted_at: datetime
    completed_at: datetime | None
    ledger_seq: int | None = None
    # The batch request the operation came in and its place there (from 1),
    # or None: the workers apply a batch's operations in this order.
    batch_id: int | None = None
    batch_position: int | None = None
    # A credit's, debit's, transfer's or capture's succeeded reversals: their
    # sum and their ids, oldest first (None: none yet).
    reversed: int = 0
    reversals: list[str] | None = None


@dataclass(frozen=True)
class Event:
    """An event to record or publish; read back from the outbox, its body is JSON text.

    Publishing the text as it is read spares decoding and encoding every
    body again, and makes every copy of an event the same bytes. An
    operation's outcome event is recorded without a body (None): its
    operation's row holds all of it, and the outbox read renders it from
    that row (`adapters.outbox_reads`).
    """

    message_id: str
    routing_key: str
    body: dict[str, Any] | str | None
    # The outbox row's id, once it has one.
    event_id: int | None = None


class Ledger(Protocol):
    """The accounts and holds: their locks, and the writes of what a ledger transaction decided."""

    def lock_and_get_accounts(
        self, account_ids: list[str], *, ledger_seqs: int
    ) -> tuple[dict[str, AccountState], list[int]]:
        """Take the advisory lock of every account, in a fixed order (raise LockBusy), then
        read the accounts as the transactions waited for left them, and take `ledger_seqs`
        ledger sequence numbers (ascending): the order in which the ledger applied its
        operations, so they are taken only once the locks are held."""

    def get_holds(self, hold_ids: list[str], for_update: bool = False) -> dict[str, HoldState]: ...

    def get_hold(self, hold_id: str, *, for_update: bool = False) -> HoldState | None: ...

    def write_batch(
        self,
        moves: dict[str, tuple[int, int]],
        entries: list[Entry],
        completed: list[OperationRecord],
        events: list[Event],
        created_at: datetime,
    ) -> dict[str, tuple[int, int]]:
        """Move client balances by (posted, held), insert the entries, store each operation's
        terminal status, outcome and ledger sequence number, and record the events in the
        outbox with the next feed numbers, in their order (numbers that become visible in
        their order: the transaction holds them until it commits); return each moved
        account's (posted, held) after. One write for all of it, across the concerns: it
        runs while the account locks are held."""

    def save_holds(self, new: list[HoldState], changed: list[HoldState]) -> None: ...

    def create_account(self, account: NewAccount) -> tuple[dict[str, Any], bool]: ...


class Operations(Protocol):
    """The operations' records: accepted as pending, then locked to be applied in order."""

    def insert_operation(self, operation: Operation) -> tuple[OperationRecord, bool]: ...

    def insert_operations(
        self, operations: list[Operation], *, as_batch: bool = False
    ) -> tuple[dict[str, OperationRecord], set[str]]:
        """Record the new operations as pending (`as_batch`: as one batch, in the order
        given); every record, and the ids newly inserted."""

    def lock_operations(
        self, operation_ids: list[str], *, with_earlier: bool, limit: int
    ) -> dict[str, OperationRecord]:
        """Lock the named operations' rows and, `with_earlier`, those of the pending
        operations before the pending named ones in their batches (waiting for them, in
        one fixed order: batch, place, id); their records, as now. At most `limit`, the
        first in that order: so with fewer, every named one that exists is there."""

    def take_pending_operations(
        self, excluded_ids: list[str], *, limit: int
    ) -> list[OperationRecord]:
        """Lock the oldest pending operations no other transaction holds and the sweep
        never sent again, skipping the excluded; a batch's in its order."""

    def batch_fronts(self, lasts: dict[int, int], held_ids: list[str]) -> dict[int, int]:
        """For each batch id, the first place before its `lasts` place that holds a pending
        operation not among `held_ids`; batches without one are left out."""

    def get_reversal_targets(self, operation_ids: list[str]) -> dict[str, ReversalTarget]:
        """The named operations that exist, as reversals see them: type, status, posted
        entries and the sum of their succeeded reversals (no lock taken)."""

    def record_reversals(self, reversals: dict[str, list[tuple[str, int]]]) -> None:
        """Add the succeeded reversals (id, amount) to the operations they reverse (their
        `reversed` sum and list); raise InvalidData when one would pass its amount."""


class Outbox(Protocol):
    """The events recorded with the changes they tell of, until they are published."""

    def unpublished_events(self, message_ids: list[str]) -> list[Event]:
        """The named events not yet published, with their bodies (no lock taken)."""

    def claim_unpublished_events(self, *, older_than_s: float, limit: int) -> list[Event]:
        """Lock the oldest events unpublished for a while (skipping ones another holds)."""

    def mark_events_published(self, events: list[Event]) -> None:
        """Take events read back from the outbox off the list of those to publish."""

    def prune_events(self, *, retention_days: int, limit: int) -> int:
        """Delete up to `limit` of the oldest published events past the retention, in feed
        order; how many."""


class Sweep(Protocol):
    """What the periodic jobs look for: operations left pending, holds past their time."""

    def mark_pending_resent(self, *, older_than_s: float, limit: int) -> list[tuple[str, int]]:
        """Mark pending operations not (re)sent for a while as sent again now (locked):
        each id with how many times it has been sent again, this time included."""

    def due_hold_ids(self, *, limit: int) -> list[str]:
        """Active holds whose expires_at has passed, oldest first."""


class UnitOfWork(Protocol):
    """One database transaction over the ledger, and its ports by concern.

    One `with` is one transaction: it ends with at most one `commit`, its
    last step; leaving it without one rolls everything back.
    """

    @property
    def ledger(self) -> Ledger: ...

    @property
    def operations(self) -> Operations: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def sweep(self) -> Sweep: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class EventPublisher(Protocol):
    def publish(self, events: list[Event]) -> None:
        """Publish with confirms; raise TransientError when the broker is unreachable,
        EventsRefused when it took only some of them."""
