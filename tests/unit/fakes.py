"""An in-memory unit of work: the ports of `billing.ports` over dicts and lists, for unit tests.

It keeps what the service layer relies on, simply. One `with` is one
transaction: its writes go to a copy of the committed state that replaces
it on commit and is dropped otherwise (an exception included); a second
commit in one `with`, or a port used after the commit, fails the test, as
does a unit of work opened inside itself. `now()` is the time the
transaction began, as PostgreSQL's. Locks are recorded, not taken: a unit
test runs one transaction at a time. Sequences (ledger numbers, batch ids,
event ids) are not rolled back, as PostgreSQL's are not.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from billing import limits
from billing.batch import Entry
from billing.domain import (
    AccountState,
    Bucket,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    Posting,
    Status,
    external_account_id,
)
from billing.ports import Event, InvalidData, LockBusy, OperationRecord, TransientError
from billing.representation import EVENT_SCHEMA_VERSION, render_operation
from billing.reversals import ReversalTarget


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Store:
    """The tables, as one transaction sees them."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    account_rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # metadata, created_at
    holds: dict[str, HoldState] = field(default_factory=dict)
    operations: dict[str, OperationRecord] = field(default_factory=dict)
    resends: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # resent_at, resends
    entries: list[Entry] = field(default_factory=list)
    events: dict[int, Event] = field(default_factory=dict)
    event_times: dict[int, datetime] = field(default_factory=dict)
    unpublished: dict[int, None] = field(default_factory=dict)  # event ids, oldest first
    event_seqs: dict[int, int] = field(default_factory=dict)  # event id -> its feed number
    last_event_seq: int = 0  # the feed's counter: pruning never takes numbers back

    def copy(self) -> Store:
        return Store(
            dict(self.accounts),
            dict(self.account_rows),
            dict(self.holds),
            dict(self.operations),
            dict(self.resends),
            list(self.entries),
            dict(self.events),
            dict(self.event_times),
            dict(self.unpublished),
            dict(self.event_seqs),
            self.last_event_seq,
        )


class FakeUnitOfWork:
    """`ports.UnitOfWork` in memory; `committed` is what other transactions would see."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.committed = Store()
        self.commits = 0
        self.rollbacks = 0
        # The account ids of every lock_and_get_accounts, in the order asked.
        self.locked: list[list[str]] = []
        # Faults to inject: every port call raises TransientError (an outage);
        # the locks of these accounts stay busy (LockBusy); the database refuses
        # the entries, or even the outcome, of these operations.
        self.outage = False
        self.busy_accounts: set[str] = set()
        self.refuse_entries_of: set[str] = set()
        self.refuse_outcomes_of: set[str] = set()
        # Run once while the next account locks are waited for, as another
        # transaction that commits meanwhile: on the committed state, and on
        # this transaction's, whose later reads see what was committed.
        self.before_next_lock: Callable[[Store], None] | None = None
        self._working: Store | None = None
        self._ended = False
        self._now = self.clock()
        self._ledger_seqs = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self.ledger = FakeLedger(self)
        self.operations = FakeOperations(self)
        self.outbox = FakeOutbox(self)
        self.sweep = FakeSweep(self)

    def __enter__(self) -> FakeUnitOfWork:
        assert self._working is None, "a unit of work opened inside itself"
        if self.outage:
            raise TransientError("the database is unreachable")
        self._working, self._ended, self._now = self.committed.copy(), False, self.clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._ended:
            self.rollbacks += 1
        self._working = None

    def commit(self) -> None:
        self.committed = self.store
        self._ended = True
        self.commits += 1

    @property
    def store(self) -> Store:
        """The transaction's view of the tables."""
        assert self._working is not None, "use the unit of work inside `with`"
        assert not self._ended, "the unit of work was used after its commit"
        if self.outage:
            raise TransientError("the database is unreachable")
        return self._working

    def now(self) -> datetime:
        return self._now

    def next_ledger_seq(self) -> int:
        return next(self._ledger_seqs)

    def next_batch_id(self) -> int:
        return next(self._batch_ids)

    def next_event_id(self) -> int:
        return next(self._event_ids)


class _Port:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow


def _is_pending(record: OperationRecord) -> bool:
    return record.operation.status is Status.pending


def _place(record: OperationRecord) -> tuple[bool, int, bool, int]:
    # PostgreSQL sorts NULLs last.
    return (
        record.batch_id is None,
        record.batch_id or 0,
        record.batch_position is None,
        record.batch_position or 0,
    )


class FakeLedger(_Port):
    def lock_and_get_accounts(
        self, account_ids: list[str], *, ledger_seqs: int
    ) -> tuple[dict[str, AccountState], list[int]]:
        store = self._uow.store
        self._uow.locked.append(list(account_ids))
        if self._uow.busy_accounts.intersection(account_ids):
            raise LockBusy(f"{sorted(self._uow.busy_accounts)}: lock wait timed out")
        meanwhile, self._uow.before_next_lock = self._uow.before_next_lock, None
        if meanwhile is not None:
            meanwhile(self._uow.committed)
            meanwhile(store)
        accounts = {a: store.accounts[a] for a in account_ids if a in store.accounts}
        return accounts, [self._uow.next_ledger_seq() for _ in range(ledger_seqs)]

    def get_holds(self, hold_ids: list[str], for_update: bool = False) -> dict[str, HoldState]:
        store = self._uow.store
        return {h: store.holds[h] for h in hold_ids if h in store.holds}

    def get_hold(self, hold_id: str, *, for_update: bool = False) -> HoldState | None:
        return self._uow.store.holds.get(hold_id)

    def write_batch(
        self,
        moves: dict[str, tuple[int, int]],
        entries: list[Entry],
        completed: list[OperationRecord],
        events: list[Event],
        created_at: datetime,
    ) -> dict[str, tuple[int, int]]:
        store = self._uow.store
        refused = {e.operation_id for e in entries} & self._uow.refuse_entries_of
        refused |= {r.operation.operation_id for r in completed} & self._uow.refuse_outcomes_of
        if refused:
            raise InvalidData(f"the database refused what was written for {sorted(refused)}")
        after = {}
        for account_id, (posted, held) in moves.items():
            account = store.accounts.get(account_id)
            if account is None or account.is_external:
                continue
            account = replace(
                account,
                posted=account.posted + posted,
                held=account.held + held,
                last_entry_at=created_at,
            )
            store.accounts[account_id] = account
            after[account_id] = (account.posted, account.held)
        store.entries += entries
        for record in completed:
            stored = store.operations[record.operation.operation_id]
            store.operations[record.operation.operation_id] = replace(
                stored,
                operation=replace(stored.operation, status=record.operation.status),
                error_code=record.error_code,
                error_message=record.error_message,
                balances=record.balances,
                completed_at=record.completed_at,
                ledger_seq=record.ledger_seq,
            )
        for event in events:
            store.last_event_seq += 1
            event_id = self._uow.next_event_id()
            store.events[event_id] = replace(event, event_id=event_id)
            store.event_times[event_id] = self._uow.now()
            store.event_seqs[event_id] = store.last_event_seq
            store.unpublished[event_id] = None
        return after

    def save_holds(self, new: list[HoldState], changed: list[HoldState]) -> None:
        store = self._uow.store
        for hold in new:
            if hold.hold_id in store.holds:
                raise InvalidData(f"hold {hold.hold_id} exists")
            store.holds[hold.hold_id] = hold
        for hold in changed:
            stored = store.holds[hold.hold_id]
            store.holds[hold.hold_id] = replace(
                stored, captured=hold.captured, remaining=hold.remaining, status=hold.status
            )

    def create_account(self, account: NewAccount) -> tuple[dict[str, Any], bool]:
        store = self._uow.store
        external = external_account_id(account.currency)
        if external not in store.accounts:
            store.accounts[external] = AccountState(external, account.currency, 0, 0, 0, True)
            store.account_rows[external] = {"metadata": {}, "created_at": self._uow.now()}
        created = account.account_id not in store.accounts
        if created:
            store.accounts[account.account_id] = AccountState(
                account.account_id, account.currency, 0, 0, account.overdraft_limit
            )
            row = {"metadata": account.metadata, "created_at": self._uow.now()}
            store.account_rows[account.account_id] = row
        state = store.accounts[account.account_id]
        return {
            "account_id": state.account_id,
            "currency": state.currency,
            "posted": state.posted,
            "held": state.held,
            "overdraft_limit": state.overdraft_limit,
            "is_external": state.is_external,
            **store.account_rows[account.account_id],
        }, created


class FakeOperations(_Port):
    def insert_operation(self, operation: Operation) -> tuple[OperationRecord, bool]:
        records, created = self.insert_operations([operation])
        return records[operation.operation_id], bool(created)

    def insert_operations(
        self, operations: list[Operation], *, as_batch: bool = False
    ) -> tuple[dict[str, OperationRecord], set[str]]:
        store = self._uow.store
        batch_id = self._uow.next_batch_id() if as_batch else None
        created = set()
        for position, operation in enumerate(operations, start=1):
            if operation.operation_id in store.operations:
                continue
            store.operations[operation.operation_id] = OperationRecord(
                operation=Operation(operation.operation_id, operation.type, operation.request),
                error_code=None,
                error_message=None,
                balances=None,
                accepted_at=self._uow.now(),
                completed_at=None,
                batch_id=batch_id,
                batch_position=position if as_batch else None,
            )
            created.add(operation.operation_id)
        return {o.operation_id: store.operations[o.operation_id] for o in operations}, created

    def lock_operations(
        self, operation_ids: list[str], *, with_earlier: bool, limit: int
    ) -> dict[str, OperationRecord]:
        store = self._uow.store
        given = [store.operations[i] for i in dict.fromkeys(operation_ids) if i in store.operations]
        chosen = {r.operation.operation_id: r for r in given}
        if with_earlier:
            lasts: dict[int, int] = {}
            for record in given:
                if _is_pending(record) and record.batch_id is not None:
                    last = max(lasts.get(record.batch_id, 0), record.batch_position or 0)
                    lasts[record.batch_id] = last
            for record in store.operations.values():
                if (
                    _is_pending(record)
                    and record.batch_id in lasts
                    and (record.batch_position or 0) < lasts[record.batch_id]
                ):
                    chosen.setdefault(record.operation.operation_id, record)
        ordered = sorted(chosen.values(), key=lambda r: (*_place(r), r.operation.operation_id))
        return {r.operation.operation_id: r for r in ordered[:limit]}

    def take_pending_operations(
        self, excluded_ids: list[str], *, limit: int
    ) -> list[OperationRecord]:
        store = self._uow.store
        since = self._uow.now() - timedelta(seconds=limits.take_along_window_s)
        excluded = set(excluded_ids)
        found = [
            r
            for r in store.operations.values()
            if _is_pending(r)
            and r.operation.operation_id not in excluded
            and r.operation.operation_id not in store.resends
            and r.accepted_at > since
        ]
        return sorted(found, key=lambda r: (r.accepted_at, *_place(r)))[:limit]

    def batch_fronts(self, lasts: dict[int, int], held_ids: list[str]) -> dict[int, int]:
        store = self._uow.store
        held = set(held_ids)
        fronts: dict[int, int] = {}
        for record in store.operations.values():
            batch_id, position = record.batch_id, record.batch_position or 0
            if (
                batch_id in lasts
                and _is_pending(record)
                and position < lasts[batch_id]
                and record.operation.operation_id not in held
            ):
                fronts[batch_id] = min(fronts.get(batch_id, position), position)
        return fronts

    def get_reversal_targets(self, operation_ids: list[str]) -> dict[str, ReversalTarget]:
        store = self._uow.store
        targets = {}
        for operation_id in operation_ids:
            record = store.operations.get(operation_id)
            if record is None:
                continue
            operation = record.operation
            posted = (
                tuple(
                    Posting(e.account_id, e.amount)
                    for e in store.entries
                    if e.operation_id == operation_id and e.bucket == Bucket.posted
                )
                if operation.status is Status.succeeded
                else ()
            )
            targets[operation_id] = ReversalTarget(
                operation_id, operation.type, operation.status, posted, record.reversed
            )
        return targets

    def record_reversals(self, reversals: dict[str, list[tuple[str, int]]]) -> None:
        store = self._uow.store
        for target_id, made in reversals.items():
            (target,) = self.get_reversal_targets([target_id]).values()
            amount = sum(amount for _, amount in made)
            if target.status is not Status.succeeded or target.reversed + amount > target.amount:
                raise InvalidData(f"operation {target_id}: reversed beyond its amount")
            stored = store.operations[target_id]
            store.operations[target_id] = replace(
                stored,
                reversed=stored.reversed + amount,
                reversals=[*(stored.reversals or []), *(i for i, _ in made)],
            )


class FakeOutbox(_Port):
    def prune_events(self, *, retention_days: int, limit: int) -> int:
        store = self._uow.store
        before = self._uow.now() - timedelta(days=retention_days)
        pruned = 0
        for event_id in sorted(store.event_seqs, key=store.event_seqs.__getitem__)[:limit]:
            if event_id in store.unpublished or store.event_times[event_id] >= before:
                break
            del store.events[event_id], store.event_times[event_id], store.event_seqs[event_id]
            pruned += 1
        return pruned

    def unpublished_events(self, message_ids: list[str]) -> list[Event]:
        store = self._uow.store
        wanted = dict.fromkeys(message_ids)
        found: dict[str, Event] = {}
        for event_id in store.unpublished:
            event = store.events[event_id]
            if event.message_id in wanted:
                found.setdefault(event.message_id, self._with_body(event))
        return [found[m] for m in wanted if m in found]

    def claim_unpublished_events(self, *, older_than_s: float, limit: int) -> list[Event]:
        store = self._uow.store
        before = self._uow.now() - timedelta(seconds=older_than_s)
        old = [i for i in store.unpublished if store.event_times[i] < before]
        return [self._with_body(store.events[i]) for i in old[:limit]]

    def mark_events_published(self, events: list[Event]) -> None:
        store = self._uow.store
        for event in events:
            assert event.event_id is not None, "only events read back can be marked"
            store.unpublished.pop(event.event_id, None)

    def _with_body(self, event: Event) -> Event:
        """An event's body with its feed number, an outcome's rendered from its operation,
        as the outbox read does."""
        assert event.event_id is not None
        event_seq = self._uow.store.event_seqs[event.event_id]
        if event.body is not None:
            stored = event.body if isinstance(event.body, dict) else json.loads(event.body)
            return replace(event, body={"event_seq": event_seq, **stored})
        record = self._uow.store.operations[event.message_id]
        return replace(
            event,
            body={
                **render_operation(record, as_completed=True),
                "event_seq": event_seq,
                "schema_version": EVENT_SCHEMA_VERSION,
            },
        )


class FakeSweep(_Port):
    def mark_pending_resent(self, *, older_than_s: float, limit: int) -> list[tuple[str, int]]:
        store = self._uow.store
        now = self._uow.now()
        before = now - timedelta(seconds=older_than_s)

        def last_sent(record: OperationRecord) -> datetime:
            resent = store.resends.get(record.operation.operation_id)
            return resent[0] if resent else record.accepted_at

        stuck = sorted(
            (r for r in store.operations.values() if _is_pending(r) and last_sent(r) < before),
            key=lambda r: r.accepted_at,
        )[:limit]
        marked = []
        for record in stuck:
            operation_id = record.operation.operation_id
            resends = store.resends.get(operation_id, (now, 0))[1] + 1
            store.resends[operation_id] = (now, resends)
            marked.append((operation_id, resends))
        return marked

    def due_hold_ids(self, *, limit: int) -> list[str]:
        now = self._uow.now()
        due = [
            h
            for h in self._uow.store.holds.values()
            if h.status is HoldStatus.active and h.expires_at is not None and h.expires_at <= now
        ]
        return [h.hold_id for h in sorted(due, key=lambda h: h.expires_at or now)][:limit]


class FakePublisher:
    """`ports.EventPublisher` that keeps what it was given; `down` makes it fail."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.down = False

    def publish(self, events: list[Event]) -> None:
        if self.down:
            raise TransientError("the broker is unreachable")
        self.published += events


def assert_ledger_consistent(store: Store) -> None:
    """What must hold after any transaction: every client account's figures are the sums of
    its entries, held is the sum of its active holds, posted money sums to zero by currency."""
    sums: dict[tuple[str, str], int] = {}
    for entry in store.entries:
        key = (entry.account_id, str(entry.bucket))
        sums[key] = sums.get(key, 0) + entry.amount
    by_currency: dict[str, int] = {}
    for account in store.accounts.values():
        posted = sums.get((account.account_id, Bucket.posted), 0)
        by_currency[account.currency] = by_currency.get(account.currency, 0) + posted
        if account.is_external:
            continue
        held = sum(
            h.remaining
            for h in store.holds.values()
            if h.account_id == account.account_id and h.status is HoldStatus.active
        )
        assert (account.posted, account.held) == (
            posted,
            sums.get((account.account_id, Bucket.held), 0),
        ), account
        assert account.held == held, f"{account.account_id}: held {account.held}, holds {held}"
    assert all(total == 0 for total in by_currency.values()), by_currency
