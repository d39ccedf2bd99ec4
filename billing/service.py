"""The service layer: one function per use case, each inside one unit of work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from billing import gate, holds, limits, reversals
from billing.batch import BatchApplier
from billing.domain import (
    ErrorCode,
    Failure,
    HoldState,
    HoldStatus,
    NewAccount,
    Operation,
    OperationType,
    Status,
    expiry_operation_id,
)
from billing.holds import hold_account_ids
from billing.ports import (
    Event,
    EventPublisher,
    EventsRefused,
    OperationRecord,
    TransientError,
    UnitOfWork,
)
from billing.reversals import ReversalTarget
from billing.rules import involved_account_ids

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Applied:
    """What applying one operation did; `event_ids` are left to publish."""

    operation_id: str
    found: bool
    newly_applied: bool
    event_ids: list[str]
    record: OperationRecord | None = None


def apply_operation(operation_id: str, uow: UnitOfWork, clock: Clock = utc_now) -> Applied:
    """Apply one accepted operation exactly once (a batch of one)."""
    return apply_operations([operation_id], uow, clock)[0]


def apply_operations(
    operation_ids: list[str], uow: UnitOfWork, clock: Clock = utc_now
) -> list[Applied]:
    """Apply accepted operations exactly once, in order, in as few transactions as may be.

    The operations' rows are locked first, so no other transaction applies
    them meanwhile and their status as read is final; then every involved
    account is locked (in a fixed order, so batches never deadlock). A
    terminal operation is left alone, so any number of deliveries of the
    same ids apply each operation once.

    An operation of a batch is applied only after every operation before
    it in its batch: the pending ones before it are locked with it and
    applied first, in the batch's order, whichever task, redelivery or
    resend brought it. A transaction applies at most
    `operations_per_transaction_max` operations, the first in that order;
    the rest of the given ones go in the next transaction, up to
    `ledger_transactions_per_task_max` transactions.

    While there is room, the oldest other pending operations that no other
    transaction holds are taken along: under a backlog, one transaction
    catches up on the operations queued behind this one, whose own tasks
    then find nothing left to do; one whose batch has an earlier operation
    pending elsewhere is not. The result lists the given ids first, then
    the operations applied with them; and one the recovery sweep had to
    send again is left to its own tasks.

    One operation never holds back another. If a transaction fails for
    anything but an outage (a TransientError, raised for the caller to
    retry), the given operations are tried again without the others, then
    each alone (alone means without the earlier operations of their
    batches too: one that must follow them stays pending behind them): one
    that fails `operation_attempts_max` times alone ends failed with
    internal_error, and the rest are applied as if it had not been there.
    """
    ids = list(dict.fromkeys(operation_ids))
    applied: list[Applied] = []
    left = ids
    for _ in range(limits.ledger_transactions_per_task_max):
        done, left = _apply_isolating(left, uow, clock)
        applied += done
        if not left:
            return _given_first(ids, applied)
    raise TransientError(f"operations {left[:3]}...: still behind others of their batches")


def _apply_isolating(
    ids: list[str], uow: UnitOfWork, clock: Clock
) -> tuple[list[Applied], list[str]]:
    """One ledger transaction; the ids left for the next. Should it fail for anything
    but an outage: the given ids without the others, then each alone."""
    try:
        return _apply_settled(ids, uow, clock, take_along=True)
    except TransientError:
        raise
    except Exception:
        log.warning("operations %s: failed with others taken along", ids[:3], exc_info=True)
    if len(ids) > 1:
        try:
            return _apply_settled(ids, uow, clock, take_along=False)
        except TransientError:
            raise
        except Exception:
            log.warning("operations %s: failed together; each alone now", ids[:3], exc_info=True)
    applied: list[Applied] = []
    unrecorded: Exception | None = None
    for operation_id in ids:
        try:
            applied += _apply_alone(operation_id, uow, clock)
        except TransientError:
            raise
        except Exception as error:
            # Not even its failure could be stored: the others go on, then the
            # task fails, so its message is parked for the operators (and the
            # sweep sends the operation again, a bounded number of times).
            log.exception("operation %s: could not even be ended failed", operation_id)
            unrecorded = error
    if unrecorded is not None:
        raise unrecorded
    return applied, []


def _apply_settled(
    ids: list[str], uow: UnitOfWork, clock: Clock, *, take_along: bool
) -> tuple[list[Applied], list[str]]:
    """`_apply_batch`, choosing the locks again while holds appear under them."""
    for _ in range(limits.lock_set_attempts_max):
        try:
            return _apply_batch(ids, uow, clock, take_along=take_along)
        except _LocksChanged:
            continue
    raise TransientError(f"operations {ids[:3]}...: their holds kept changing under the locks")


def _given_first(ids: list[str], applied: list[Applied]) -> list[Applied]:
    """The outcomes of the given ids in their order (the one that applied each, if one
    did: a given operation left waiting may be applied by a later transaction), then
    the operations applied with them."""
    given = set(ids)
    outcomes: dict[str, Applied] = {}
    for outcome in applied:
        if outcome.operation_id in given and (
            outcome.newly_applied or outcome.operation_id not in outcomes
        ):
            outcomes[outcome.operation_id] = outcome
    return [outcomes[i] for i in ids] + [a for a in applied if a.operation_id not in given]


# The messages of operations the service gave up on; the log has the cause.
APPLY_FAILED_MESSAGE = (
    f"the service could not apply the operation in {limits.operation_attempts_max} attempts; "
    "the operators have the details"
)
RESENT_TOO_OFTEN_MESSAGE = (
    f"the operation stayed pending through {limits.pending_resends_max} resends; "
    "the operators have the details"
)


def _apply_alone(operation_id: str, uow: UnitOfWork, clock: Clock) -> list[Applied]:
    """One operation in transactions of its own, given up after `operation_attempts_max`."""
    for attempt in range(1, limits.operation_attempts_max + 1):
        try:
            return _apply_settled([operation_id], uow, clock, take_along=False)[0]
        except TransientError:
            raise
        except Exception:
            log.warning(
                "operation %s: attempt %d alone failed", operation_id, attempt, exc_info=True
            )
    log.error(
        "operation %s: failed %d times alone, for a reason other than an outage; "
        "it ends failed with internal_error",
        operation_id,
        limits.operation_attempts_max,
    )
    return _give_up([operation_id], uow, APPLY_FAILED_MESSAGE, clock)


def _give_up(
    operation_ids: list[str], uow: UnitOfWork, message: str, clock: Clock = utc_now
) -> list[Applied]:
    """End the pending operations failed with internal_error, applying nothing of them."""
    with uow:
        records = uow.operations.lock_operations(
            operation_ids, with_earlier=False, limit=len(operation_ids)
        )
        pending = [records[i] for i in operation_ids if i in records and _is_pending(records[i])]
        if pending:
            _, seqs = uow.ledger.lock_and_get_accounts([], ledger_seqs=len(pending))
            applier = BatchApplier({}, {}, clock())
            failure = Failure(ErrorCode.internal_error, message)
            for record, seq in zip(pending, seqs, strict=True):
                records[record.operation.operation_id] = applier.apply(record, seq, failure)
            _write(applier, uow, [outcome_event(r) for r in applier.completed])
        uow.commit()
    ended = {r.operation.operation_id for r in pending}
    return [
        Applied(
            i,
            found=i in records,
            newly_applied=i in ended,
            event_ids=[i] if i in ended else [],
            record=records[i] if i in ended else None,
        )
        for i in operation_ids
    ]


class _LocksChanged(Exception):
    """A hold appeared between choosing the locks and taking them: choose again."""


def _apply_batch(
    ids: list[str], uow: UnitOfWork, clock: Clock, *, take_along: bool
) -> tuple[list[Applied], list[str]]:
    size_max = limits.operations_per_transaction_max
    with uow:
        records = uow.operations.lock_operations(ids, with_earlier=take_along, limit=size_max)
        # At the limit, a given id not locked may lie beyond it: the next transaction's.
        full = len(records) >= size_max
        left = [i for i in ids if i not in records] if full else []
        # The given ones in their order, then the earlier ones of their batches.
        given = set(ids)
        locked = [records[i] for i in ids if i in records]
        locked += [r for i, r in records.items() if i not in given]
        locked = [r for r in locked if _is_pending(r)]
        room = size_max - len(locked) if take_along and not full else 0
        taken_along = (
            uow.operations.take_pending_operations([*ids, *records], limit=room) if room > 0 else []
        )
        held_ids = [*records, *(r.operation.operation_id for r in taken_along)]
        # Alone, the given operations were locked without the ones before them.
        waiting = _waiting_for_their_batch(
            taken_along if take_along else locked + taken_along, held_ids, uow
        )
        pending = sorted(
            (r for r in locked + taken_along if r.operation.operation_id not in waiting),
            key=_acceptance_order,
        )
        records.update((r.operation.operation_id, r) for r in pending)
        if pending:
            _apply_pending(pending, records, uow, clock)
        uow.commit()
    applied_ids = {r.operation.operation_id for r in pending}
    reported = [i for i in ids if i not in left] + [
        r.operation.operation_id for r in pending if r.operation.operation_id not in given
    ]
    return [
        Applied(
            operation_id,
            found=operation_id in records,
            newly_applied=operation_id in applied_ids,
            event_ids=[operation_id] if operation_id in applied_ids else [],
            record=records.get(operation_id) if operation_id in applied_ids else None,
        )
        for operation_id in reported
    ], left


def _acceptance_order(record: OperationRecord) -> tuple[datetime, int, int]:
    # A batch's operations share the time they were accepted; their places order them.
    return record.accepted_at, record.batch_id or 0, record.batch_position or 0


def _waiting_for_their_batch(
    records: list[OperationRecord], held_ids: list[str], uow: UnitOfWork
) -> set[str]:
    """The ids of the operations among `records` that an operation before them in their
    batch must precede and that this transaction does not hold: they stay pending."""
    lasts: dict[int, int] = {}
    for record in records:
        if record.batch_id is not None and record.batch_position is not None:
            lasts[record.batch_id] = max(lasts.get(record.batch_id, 0), record.batch_position)
    if not lasts:
        return set()
    fronts = uow.operations.batch_fronts(lasts, held_ids)
    return {
        r.operation.operation_id
        for r in records
        if r.batch_id in fronts and (r.batch_position or 0) > fronts[r.batch_id]
    }


def _apply_pending(
    pending: list[OperationRecord],
    records: dict[str, OperationRecord],
    uow: UnitOfWork,
    clock: Clock,
) -> None:
    """Decide and write the locked pending operations; `records` gets their outcomes.

    Each passes the gate first: one whose recorded request breaks the rules
    (changed in the database, or recorded by a door that skipped the gate)
    ends failed with internal_error, and nothing of it is applied or locked.
    """
    refused: dict[str, Failure] = {}
    for record in pending:
        failure = gate.refusal(record.operation)
        if failure is not None:
            log.error(
                "operation %s: refused by the gate: %s",
                record.operation.operation_id,
                failure.message,
            )
            refused[record.operation.operation_id] = failure
    checked = (
        [r for r in pending if r.operation.operation_id not in refused] if refused else pending
    )
    account_ids, holds_before = _locks_for(checked, uow)
    targets = _reversal_targets(checked, uow)
    account_ids.update(*map(reversals.target_account_ids, targets.values()))
    accounts, seqs = uow.ledger.lock_and_get_accounts(sorted(account_ids), ledger_seqs=len(pending))
    holds = uow.ledger.get_holds(list(holds_before), for_update=True)
    if any(h not in holds_before or holds_before[h] is None for h in holds):
        raise _LocksChanged()
    if targets:
        # Read again under the locks, to decide with; one that succeeded meanwhile
        # needs locks not taken.
        targets = uow.operations.get_reversal_targets(sorted(targets))
        if not set().union(*map(reversals.target_account_ids, targets.values())) <= account_ids:
            raise _LocksChanged()
    applier = BatchApplier(
        accounts, {h: hold for h, hold in holds.items() if hold is not None}, clock(), targets
    )
    for record, seq in zip(pending, seqs, strict=True):
        operation_id = record.operation.operation_id
        records[operation_id] = applier.apply(record, seq, refused.get(operation_id))
    _write(applier, uow, [outcome_event(r) for r in applier.completed])


def _is_pending(record: OperationRecord) -> bool:
    return record.operation.status is Status.pending


def _locks_for(
    pending: list[OperationRecord], uow: UnitOfWork
) -> tuple[set[str], dict[str, HoldState | None]]:
    """The accounts to lock, and the holds the batch refers to as they are now.

    A hold's accounts never change, so reading it before the locks tells
    which locks to take; a hold created by an earlier operation of the same
    batch lends the accounts of that operation.
    """
    created_here = {
        r.operation.operation_id: r.operation
        for r in pending
        if r.operation.type is OperationType.hold
    }
    hold_ids = {r.operation.request["hold_id"] for r in pending if "hold_id" in r.operation.request}
    stored = uow.ledger.get_holds(sorted(hold_ids - set(created_here)))
    holds_before: dict[str, HoldState | None] = {h: stored.get(h) for h in hold_ids}
    account_ids: set[str] = set()
    for record in pending:
        hold_id = record.operation.request.get("hold_id")
        if hold_id in created_here:
            account_ids.update(involved_account_ids(created_here[hold_id], None))
            holds_before.pop(hold_id, None)
        else:
            account_ids.update(
                involved_account_ids(record.operation, holds_before.get(hold_id or ""))
            )
    return account_ids, holds_before


def _reversal_targets(pending: list[OperationRecord], uow: UnitOfWork) -> dict[str, ReversalTarget]:
    """The operations the batch's reversals reverse, as they are now.

    A reversal moves money on the client accounts of the operation it
    reverses, so that operation is read before the locks to tell which to
    take. One still pending in this batch takes its own locks, and the
    reversal after it sees how it ended.
    """
    reversed_ids = {
        r.operation.request["reverses"]
        for r in pending
        if r.operation.type is OperationType.reversal
    }
    return uow.operations.get_reversal_targets(sorted(reversed_ids)) if reversed_ids else {}


def _write(applier: BatchApplier, uow: UnitOfWork, events: list[Event]) -> None:
    """Write what the batch did, and check the balances against the rules."""
    moves = applier.balance_moves()
    after = uow.ledger.write_batch(moves, applier.entries, applier.completed, events, applier.now)
    assert after == applier.expected_balances(set(moves)), "balances drifted from the entries"
    uow.ledger.save_holds(
        [applier.holds[h] for h in sorted(applier.new_hold_ids)],
        [applier.holds[h] for h in sorted(applier.changed_hold_ids)],
    )
    if applier.reversals:
        uow.operations.record_reversals(applier.reversals)


def expire_hold(hold_id: str, uow: UnitOfWork, clock: Clock = utc_now) -> str | None:
    """Expire an active hold whose time has passed; the id of its event, or None.

    Under the same account locks as a capture or release, so a hold that a
    concurrent capture just ended is left alone: it ends in exactly one state.
    """
    with uow:
        hold = uow.ledger.get_hold(hold_id)
        if hold is None or hold.status is not HoldStatus.active:
            return None
        accounts, (seq,) = uow.ledger.lock_and_get_accounts(hold_account_ids(hold), ledger_seqs=1)
        hold = uow.ledger.get_hold(hold_id, for_update=True)
        now = clock()
        if hold is None or holds.expire(hold, now) is None:
            return None
        operation = Operation(
            expiry_operation_id(hold_id), OperationType.expiry, {"hold_id": hold_id}
        )
        record, created = uow.operations.insert_operation(operation)
        assert created, f"hold {hold_id} was expired twice"
        applier = BatchApplier(accounts, {hold_id: hold}, now)
        applier.apply(record, seq)
        expired = applier.holds[hold_id]
        event_body = {**render_hold(expired), "schema_version": 1}
        _write(applier, uow, [Event(operation.operation_id, "hold.expired", event_body)])
        uow.commit()
    return operation.operation_id


def render_hold(hold: HoldState) -> dict[str, Any]:
    """The contract's representation of a hold."""
    return {
        "hold_id": hold.hold_id,
        "account_id": hold.account_id,
        "destination_account_id": hold.destination_account_id,
        "amount": hold.amount,
        "captured": hold.captured,
        "remaining": hold.remaining,
        "status": hold.status.value,
        "expires_at": _timestamp(hold.expires_at),
        "created_at": _timestamp(hold.created_at),
    }


def _timestamp(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds") if moment else None


def outcome_event(record: OperationRecord) -> Event:
    """An applied operation's event, recorded without a body: the operation's row holds it.

    Rendering and encoding 500 bodies, and sending them to the database,
    took a fifth of the time a ledger transaction held its account locks;
    the body is rendered from the row when the event is read to be
    published instead: the fields of `representation.OPERATION_FIELDS`.
    """
    operation = record.operation
    return Event(
        message_id=operation.operation_id,
        routing_key=f"operation.{operation.type.value}.{operation.status.value}",
        body=None,
    )


class Acceptance(StrEnum):
    accepted = "accepted"  # new: answer 202 and enqueue
    repeated = "repeated"  # the same request again: answer 200 with its state
    conflict = "conflict"  # the same id with another body: answer 409


def accept_operation(operation: Operation, uow: UnitOfWork) -> tuple[Acceptance, OperationRecord]:
    """Record an operation as pending, or recognise a retry of one already recorded."""
    with uow:
        record, created = uow.operations.insert_operation(operation)
        uow.commit()
    if created:
        return Acceptance.accepted, record
    return (
        Acceptance.repeated if same_operation(record, operation) else Acceptance.conflict
    ), record


def same_operation(record: OperationRecord, operation: Operation) -> bool:
    """Whether an operation is a retry of the recorded one: the same type and request.

    Compared as JSON values (`true` is not `1`), and metadata `{}` is the same
    as none, as it is shown.
    """
    stored, given = record.operation.request, operation.request
    return record.operation.type is operation.type and same_json(
        {"metadata": {}, **stored}, {"metadata": {}, **given}
    )


def accept_operations(
    operations: list[Operation], uow: UnitOfWork, *, as_batch: bool = False
) -> list[tuple[Acceptance, OperationRecord]]:
    """Record many operations in one transaction; each is judged like `accept_operation`.

    `as_batch`: they are one batch request, and the new ones are applied in
    the order given (their batch and places are recorded with them).
    """
    with uow:
        records, created = uow.operations.insert_operations(operations, as_batch=as_batch)
        uow.commit()
    results = []
    fresh = set(created)
    for operation in operations:
        record = records[operation.operation_id]
        if operation.operation_id in fresh:
            fresh.discard(operation.operation_id)
            results.append((Acceptance.accepted, record))
            continue
        same = same_operation(record, operation)
        results.append((Acceptance.repeated if same else Acceptance.conflict, record))
    return results


def accept_and_enqueue(
    operations: list[Operation],
    uow: UnitOfWork,
    enqueue: Callable[[list[str]], None],
    *,
    as_batch: bool = False,
) -> list[tuple[Acceptance, OperationRecord]]:
    """Record operations (one transaction), then enqueue the new ones in ledger tasks.

    Recorded before enqueued: if the enqueue fails the caller reports an
    error and the recovery sweep enqueues the recorded operations later.
    """
    results = accept_operations(operations, uow, as_batch=as_batch) if operations else []
    fresh = [r.operation.operation_id for a, r in results if a is Acceptance.accepted]
    for start in range(0, len(fresh), limits.enqueue_group_size_max):
        enqueue(fresh[start : start + limits.enqueue_group_size_max])
    return results


def open_account(account: NewAccount, uow: UnitOfWork) -> tuple[Acceptance, dict[str, Any]]:
    """Create an account; a repeat with the same currency, limit and metadata is not an error.

    Other metadata is a conflict like another currency: answering 200 would
    tell the client its metadata was stored when the old one was kept.
    """
    with uow:
        row, created = uow.ledger.create_account(account)
        uow.commit()
    if created:
        return Acceptance.accepted, row
    same = (
        row["currency"] == account.currency
        and row["overdraft_limit"] == account.overdraft_limit
        and same_json(row["metadata"], account.metadata)
    )
    return (Acceptance.repeated if same else Acceptance.conflict), row


def same_json(stored: Any, given: Any) -> bool:
    """Whether two JSON values are the same: objects in any key order, numbers by value.

    jsonb gives a number back in its own notation (1e20 as 100000000000000000000,
    1.5e300 with all its digits), so numbers compare as values, as floats when
    either is one; `true` is not `1`, though Python's `==` says it is.
    """
    if isinstance(stored, bool) or isinstance(given, bool):
        return stored is given
    if isinstance(stored, dict) and isinstance(given, dict):
        return stored.keys() == given.keys() and all(same_json(stored[k], given[k]) for k in stored)
    if isinstance(stored, list) and isinstance(given, list):
        return len(stored) == len(given) and all(map(same_json, stored, given))
    if isinstance(stored, int | float) and isinstance(given, int | float):
        if isinstance(stored, float) or isinstance(given, float):
            try:
                return float(stored) == float(given)
            except OverflowError:  # an integer beyond any float cannot equal one
                return False
        return stored == given
    return type(stored) is type(given) and stored == given


def publish_events(message_ids: list[str], uow: UnitOfWork, publisher: EventPublisher) -> int:
    """Publish the named events that are still unpublished; return how many.

    One transaction reads and marks them. The read locks no row, so none
    stays locked across the broker's wait; a publisher that races another
    one (or the relay) on an event sends it twice, which the contract allows
    (at least once, every copy the same). A crash after the publish and
    before the mark publishes it again later, for the same reason. Events
    the broker refused (EventsRefused, raised after the others are marked)
    stay unpublished, for the relay.
    """
    with uow:
        events = uow.outbox.unpublished_events(message_ids)
        if not events:
            return 0
        _publish_and_mark(events, uow, publisher)
        uow.commit()
    return len(events)


def _publish_and_mark(events: list[Event], uow: UnitOfWork, publisher: EventPublisher) -> None:
    """Publish, and mark what the broker took; a refusal is no confirm: those stay unpublished."""
    try:
        publisher.publish(events)
    except EventsRefused as refused:
        if refused.published:
            uow.outbox.mark_events_published(refused.published)
            uow.commit()
        raise
    uow.outbox.mark_events_published(events)


def relay_events(
    uow: UnitOfWork,
    publisher: EventPublisher,
    *,
    older_than_s: float,
    limit: int = limits.outbox_publish_batch_max,
    bursts_max: int = limits.outbox_relay_bursts_per_run_max,
) -> int:
    """Publish events left unpublished for `older_than_s`, oldest first; return how many.

    Their publisher died, or the broker refused them (`billing.responses`
    full). Burst after burst, each in a transaction of its own, while the
    broker takes whole bursts, up to `bursts_max`: a backlog drains at the
    broker's speed once the queue has room. The claimed rows stay locked
    while publishing, so two relays never send the same backlog twice.
    """
    published = 0
    for _ in range(bursts_max):
        with uow:
            events = uow.outbox.claim_unpublished_events(older_than_s=older_than_s, limit=limit)
            if not events:
                return published
            try:
                _publish_and_mark(events, uow, publisher)
            except EventsRefused as refused:
                return published + len(refused.published)
            uow.commit()
        published += len(events)
        if len(events) < limit:
            break
    return published


def prune_events(
    uow: UnitOfWork, *, retention_days: int, rows_per_transaction: int, transactions_max: int
) -> int:
    """Delete the published events past the retention, oldest first; how many.

    In transactions of at most `rows_per_transaction` rows, each committed
    at once: they lock only the outbox rows they delete, which nothing else
    writes any more, never an account. At most `transactions_max` a call;
    the next call goes on.
    """
    pruned = 0
    for _ in range(transactions_max):
        with uow:
            deleted = uow.outbox.prune_events(
                retention_days=retention_days, limit=rows_per_transaction
            )
            uow.commit()
        pruned += deleted
        if deleted < rows_per_transaction:
            break
    return pruned


def resend_stuck_operations(
    uow: UnitOfWork,
    enqueue: Callable[[list[str]], None],
    *,
    older_than_s: float,
    limit: int,
    clock: Clock = utc_now,
) -> tuple[list[str], list[Applied]]:
    """Enqueue again the operations left pending too long; end those resent too often.

    An operation is sent again with the others found the first time (a lost
    task lost them all), after that in a task of its own, so one that
    breaks every task it is in holds back no other; once it has been sent
    `pending_resends_max` times, the next sweep ends it failed with
    internal_error instead. The tasks are sent before the transaction that
    counts the resends commits: while the broker is down nothing is
    counted, and an outage never ends an operation. Returns the ids sent
    again and what ending the others did.
    """
    with uow:
        stuck = uow.sweep.mark_pending_resent(older_than_s=older_than_s, limit=limit)
        first = [i for i, resends in stuck if resends == 1]
        again = [i for i, resends in stuck if 1 < resends <= limits.pending_resends_max]
        for start in range(0, len(first), limits.enqueue_group_size_max):
            enqueue(first[start : start + limits.enqueue_group_size_max])
        for operation_id in again:
            enqueue([operation_id])
        uow.commit()
    given_up: list[Applied] = []
    for operation_id, resends in stuck:
        if resends > limits.pending_resends_max:
            log.error(
                "operation %s: still pending after %d resends; it ends failed with internal_error",
                operation_id,
                resends - 1,
            )
            try:
                given_up += _give_up([operation_id], uow, RESENT_TOO_OFTEN_MESSAGE, clock)
            except TransientError:
                raise
            except Exception:
                log.exception("operation %s: could not even be ended failed", operation_id)
    return first + again, given_up


def due_holds(uow: UnitOfWork, *, limit: int) -> list[str]:
    with uow:
        return uow.sweep.due_hold_ids(limit=limit)
