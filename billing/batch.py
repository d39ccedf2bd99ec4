"""Applying a batch of operations in memory, one after another, as one ledger transaction would.

The service locks every account of the batch, reads them once, and lets a
`BatchApplier` decide each operation in order against the running balances.
What comes out (entries with their running figures, the net balance moves,
the holds created or changed, the completed operations) is written back in a
handful of statements, whatever the size of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from billing import reversals
from billing.domain import (
    AccountState,
    Bucket,
    Decision,
    Entry,
    Failure,
    HoldState,
    Operation,
    OperationType,
    Status,
    apply_postings,
    assert_balanced,
)
from billing.ports import OperationRecord
from billing.reversals import ReversalTarget
from billing.rules import decide


def ledger_time(now: datetime, accounts: Iterable[AccountState]) -> datetime:
    """The time a ledger transaction gives its entries and outcomes: `now`, the clock of
    the machine applying it, unless an account it holds has an entry from later.

    Workers run on many machines, and a clock may be behind another's or step
    back. An account's transactions follow one another under its lock, so
    taking the later of the clock and the account's newest entry keeps time
    from going back along its entries, which the balances at a moment and the
    list of its entries read in time order.
    """
    return max([now, *(a.last_entry_at for a in accounts if a.last_entry_at is not None)])


class BatchApplier:
    """Decides operations in order, keeping balances and holds as they stand after each."""

    def __init__(
        self,
        accounts: dict[str, AccountState],
        holds: dict[str, HoldState],
        now: datetime,
        targets: dict[str, ReversalTarget] | None = None,
    ) -> None:
        self._start = dict(accounts)
        self.accounts = dict(accounts)
        self.holds = dict(holds)
        self.now = ledger_time(now, accounts.values())
        # The operations the batch's reversals reverse, as they stand after each
        # operation (one applied earlier in the batch as it ended), and for each
        # the batch's succeeded reversals of it: (reversal id, amount).
        self.targets = dict(targets or {})
        self.reversals: dict[str, list[tuple[str, int]]] = {}
        self.entries: list[Entry] = []
        self.completed: list[OperationRecord] = []
        self.new_hold_ids: set[str] = set()
        self.changed_hold_ids: set[str] = set()

    def apply(
        self, record: OperationRecord, ledger_seq: int, refused: Failure | None = None
    ) -> OperationRecord:
        """Decide the operation against the balances as they stand; `refused` ends it so."""
        operation = record.operation
        decision: Decision
        if refused is not None:
            decision = refused
        else:
            hold_id = operation.request.get("hold_id")
            hold = self.holds.get(hold_id) if hold_id else None
            # Only a reversal names a target, and only a batch with reversals has any.
            target = (
                self.targets.get(operation.request.get("reverses", "")) if self.targets else None
            )
            decision = decide(operation, self.accounts, hold, self.now, target)
        error: tuple[str, str] | None = None
        balances: dict[str, dict[str, int]] | None = None
        if isinstance(decision, Failure):
            status, error = Status.failed, (decision.code.value, decision.message)
        else:
            assert_balanced(decision.postings)
            after = apply_postings(self.accounts, decision.postings)
            for posting in decision.postings:
                account = after.get(posting.account_id)
                # Positional, and the members themselves (a StrEnum is its
                # value): this runs twice per operation under the locks.
                self.entries.append(
                    Entry(
                        operation.operation_id,
                        posting.account_id,
                        operation.type,
                        posting.bucket,
                        posting.amount,
                        account.posted if account else None,
                        account.held if account else None,
                    )
                )
            self.accounts.update(after)
            if decision.hold is not None:
                self._keep_hold(decision.hold, new=operation.type is OperationType.hold)
            if operation.type is OperationType.reversal:
                self._keep_reversal(operation, reversals.reversal_amount(decision.postings))
            status = Status.succeeded
            balances = {}
            for account_id in sorted(after):
                account = after[account_id]
                balances[account_id] = {
                    "posted": account.posted,
                    "held": account.held,
                    "available": account.available,
                }
        # Built directly: `dataclasses.replace` inspects the fields on every call,
        # and this runs once per operation while the accounts are locked.
        completed = OperationRecord(
            operation=Operation(operation.operation_id, operation.type, operation.request, status),
            error_code=error[0] if error else None,
            error_message=error[1] if error else None,
            balances=balances,
            accepted_at=record.accepted_at,
            completed_at=self.now,
            ledger_seq=ledger_seq,
        )
        self.completed.append(completed)
        if self.targets and operation.operation_id in self.targets:
            # A reversal later in the batch sees how this operation ended.
            posted = (
                ()
                if isinstance(decision, Failure)
                else tuple(p for p in decision.postings if p.bucket is Bucket.posted)
            )
            self.targets[operation.operation_id] = ReversalTarget(
                operation.operation_id, operation.type, status, posted
            )
        return completed

    def _keep_reversal(self, reversal: Operation, amount: int) -> None:
        target_id = reversal.request["reverses"]
        self.targets[target_id] = reversals.reversed_by(self.targets[target_id], amount)
        self.reversals.setdefault(target_id, []).append((reversal.operation_id, amount))

    def _keep_hold(self, hold: HoldState, *, new: bool) -> None:
        self.holds[hold.hold_id] = hold
        if new:
            self.new_hold_ids.add(hold.hold_id)
        elif hold.hold_id not in self.new_hold_ids:
            self.changed_hold_ids.add(hold.hold_id)

    def balance_moves(self) -> dict[str, tuple[int, int]]:
        """The net (posted, held) move of every client account the batch changed or wrote
        an entry on (a move of nothing where its entries cancel out: the write records
        the time of its newest entry all the same)."""
        entered = {e.account_id for e in self.entries}
        moves = {}
        for account_id, account in self.accounts.items():
            start = self._start[account_id]
            if (account.posted, account.held) != (start.posted, start.held) or (
                account_id in entered and not account.is_external
            ):
                moves[account_id] = (account.posted - start.posted, account.held - start.held)
        return moves

    def expected_balances(self, account_ids: set[str]) -> dict[str, tuple[int, int]]:
        """The (posted, held) the batch leaves on each of these accounts."""
        return {a: (self.accounts[a].posted, self.accounts[a].held) for a in account_ids}
