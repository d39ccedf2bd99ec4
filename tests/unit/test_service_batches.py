"""How the service layer groups operations into ledger transactions, against the in-memory unit of
work: a batch's order, taking pending operations along, one bad operation never holding back the
others (`_apply_isolating`, `_give_up`), outages left to retry, and the recovery sweep."""

from __future__ import annotations

from dataclasses import replace

import pytest

from billing import limits, service
from billing.domain import HoldState, HoldStatus, Operation, OperationType
from billing.ports import InvalidData, LockBusy, TransientError
from tests.unit.fakes import Store
from tests.unit.service_driver import Service, credit, transfer

ACCOUNTS = ("alice", "bob", "carol")


def chain(ledger: Service, name: str, length: int) -> list[str]:
    """A batch: a credit of 1 to alice, then transfers passing that 1 around alice, bob and
    carol, each spending what the one before it brought; its ids."""
    for account_id in ACCOUNTS:
        if account_id not in ledger.uow.committed.accounts:
            ledger.open(account_id)
    operations = [credit(f"{name}0", "alice", 1)]
    for k in range(1, length):
        operations.append(transfer(f"{name}{k}", ACCOUNTS[(k - 1) % 3], ACCOUNTS[k % 3], 1))
    return ledger.accept_batch(operations)


def mark_resent(ledger: Service, *operation_ids: str) -> None:
    """As the recovery sweep leaves operations: sent again, so never taken along."""
    for operation_id in operation_ids:
        ledger.uow.committed.resends[operation_id] = (ledger.clock.now, 1)


# --- a batch's order ----------------------------------------------------------------


def test_given_the_last_operation_of_a_batch_the_service_applies_the_earlier_ones_first(
    ledger: Service,
) -> None:
    ids = chain(ledger, "a", 6)
    applied = ledger.apply(ids[-1])
    assert [a.operation_id for a in applied] == [ids[-1], *ids[:-1]]
    assert all(a.newly_applied for a in applied)
    assert [ledger.outcome(i) for i in ids] == [("succeeded", None)] * 6
    assert ledger.ledger_order()[-6:] == ids
    ledger.check()


def test_a_batch_applied_from_its_last_operation_backwards_keeps_its_order(
    ledger: Service,
) -> None:
    ids = chain(ledger, "r", 8)
    mark_resent(ledger, *ids)
    for operation_id in reversed(ids):
        ledger.apply(operation_id)
    assert [ledger.outcome(i) for i in ids] == [("succeeded", None)] * 8
    assert ledger.ledger_order()[-8:] == ids


def test_a_batch_longer_than_a_transaction_takes_several_commits_in_its_order(
    ledger: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "operations_per_transaction_max", 3)
    ids = chain(ledger, "l", 10)
    commits = ledger.uow.commits
    applied = ledger.apply(*ids[5:])
    assert [a.operation_id for a in applied] == ids[5:] + ids[:5]
    assert [ledger.outcome(i) for i in ids] == [("succeeded", None)] * 10
    assert ledger.ledger_order()[-10:] == ids
    assert ledger.uow.commits - commits == 4  # 3 + 3 + 3 + 1


def test_a_task_stops_after_its_transactions_limit_with_what_it_applied_kept(
    ledger: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "operations_per_transaction_max", 1)
    ids = chain(ledger, "x", limits.ledger_transactions_per_task_max + 2)
    with pytest.raises(TransientError):
        ledger.apply(ids[-1])
    done = limits.ledger_transactions_per_task_max
    assert [ledger.outcome(i)[0] for i in ids] == ["succeeded"] * done + ["pending"] * 2
    ledger.apply(ids[-1])
    assert ledger.ledger_order()[-len(ids) :] == ids


def test_a_failure_in_a_batch_does_not_stop_the_operations_after_it(ledger: Service) -> None:
    ledger.funded("alice", 10)
    ledger.open("bob")
    ids = ledger.accept_batch(
        [
            transfer("t1", "alice", "bob", 11),
            transfer("t2", "alice", "bob", 10),
            transfer("t3", "bob", "alice", 1),
        ]
    )
    ledger.apply(*ids)
    assert [ledger.outcome(i) for i in ids] == [
        ("failed", "insufficient_funds"),
        ("succeeded", None),
        ("succeeded", None),
    ]


def test_a_batch_operation_taken_along_waits_for_an_earlier_one_it_cannot_hold(
    ledger: Service,
) -> None:
    ids = chain(ledger, "w", 2)
    mark_resent(ledger, ids[0])  # left to its own task: never taken along
    ledger.accept("credit", "other", account_id="bob", amount=1)
    applied = ledger.apply("other")
    assert [a.operation_id for a in applied] == ["other"]
    assert [ledger.outcome(i)[0] for i in ids] == ["pending", "pending"]


# --- taking pending operations along ----------------------------------------------------


def test_a_task_takes_along_the_older_pending_operations_in_acceptance_order(
    ledger: Service,
) -> None:
    ledger.open("alice")
    for n in range(3):
        ledger.accept("credit", f"c{n}", account_id="alice", amount=1)
        ledger.clock.advance(0.001)
    applied = ledger.apply("c2")
    assert [a.operation_id for a in applied] == ["c2", "c0", "c1"]
    assert ledger.ledger_order()[-3:] == ["c0", "c1", "c2"]
    assert [a.newly_applied for a in ledger.apply("c0", "c1")] == [False, False]


def test_an_operation_the_sweep_sent_again_is_not_taken_along(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "resent", account_id="alice", amount=1)
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    mark_resent(ledger, "resent")
    ledger.apply("c1")
    assert ledger.outcome("resent") == ("pending", None)


def test_an_operation_older_than_the_take_along_window_is_left_to_its_own_task(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "old", account_id="alice", amount=1)
    ledger.clock.advance(limits.take_along_window_s + 1)
    ledger.accept("credit", "new", account_id="alice", amount=1)
    ledger.apply("new")
    assert ledger.outcome("old") == ("pending", None)


# --- events ----------------------------------------------------------------------------


def test_every_terminal_operation_records_one_event_named_by_type_and_status(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    ledger.run("debit", "d1", account_id="alice", amount=6)
    keys = {e.message_id: e.routing_key for e in ledger.uow.committed.events.values()}
    assert keys == {"c1": "operation.credit.succeeded", "d1": "operation.debit.failed"}
    assert ledger.unpublished() == ["c1", "d1"]


def test_an_operation_applied_twice_records_its_event_once(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=5)
    ledger.apply("c1")
    assert [e.message_id for e in ledger.uow.committed.events.values()] == ["c1"]


def test_the_applied_outcome_names_the_events_to_publish_and_the_record(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=5)
    (applied,) = ledger.apply("c1")
    assert applied.event_ids == ["c1"]
    assert applied.record is not None and applied.record.balances == {
        "alice": {"posted": 5, "held": 0, "available": 5}
    }


# --- one bad operation ------------------------------------------------------------------


def test_an_operation_whose_write_is_refused_ends_internal_error_and_the_rest_apply(
    ledger: Service,
) -> None:
    ledger.open("alice")
    for operation_id in ("before", "refused", "after"):
        ledger.accept("credit", operation_id, account_id="alice", amount=10)
    ledger.uow.refuse_entries_of.add("refused")
    applied = ledger.apply("before", "refused", "after")
    assert [(a.operation_id, a.newly_applied) for a in applied] == [
        ("before", True),
        ("refused", True),
        ("after", True),
    ]
    assert ledger.outcome("refused") == ("failed", "internal_error")
    assert ledger.record("refused").error_message == service.APPLY_FAILED_MESSAGE
    assert ledger.outcome("before") == ledger.outcome("after") == ("succeeded", None)
    assert ledger.balances("alice") == (20, 0, 20)
    assert ledger.unpublished() == ["before", "refused", "after"]  # each alone, in order
    ledger.check()


def test_a_refused_operation_is_tried_alone_operation_attempts_max_times_before_giving_up(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "refused", account_id="alice", amount=10)
    ledger.uow.refuse_entries_of.add("refused")
    rollbacks = ledger.uow.rollbacks
    ledger.apply("refused")
    # Taken along with others once, then alone `operation_attempts_max` times.
    assert ledger.uow.rollbacks - rollbacks == 1 + limits.operation_attempts_max


def test_an_operation_taken_along_that_breaks_the_transaction_spares_the_given_one(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "poison", account_id="alice", amount=1)
    ledger.accept("credit", "given", account_id="alice", amount=1)
    ledger.uow.refuse_entries_of.add("poison")
    applied = ledger.apply("given")
    assert [a.operation_id for a in applied] == ["given"]
    assert ledger.outcome("given") == ("succeeded", None)
    assert ledger.outcome("poison") == ("pending", None)  # left to its own task


def test_a_bad_operation_in_a_batch_ends_failed_and_the_batch_goes_on_in_its_order(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.open("bob")
    ids = ledger.accept_batch(
        [credit("b1", "alice", 5), credit("bad", "bob", 5), transfer("b3", "alice", "bob", 5)]
    )
    ledger.uow.refuse_entries_of.add("bad")
    ledger.apply(*ids)
    assert [ledger.outcome(i) for i in ids] == [
        ("succeeded", None),
        ("failed", "internal_error"),
        ("succeeded", None),
    ]
    assert ledger.ledger_order() == ids
    assert ledger.balances("bob") == (5, 0, 5)


def test_alone_a_batch_operation_stays_pending_behind_an_earlier_bad_one(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ids = ledger.accept_batch([credit("bad", "alice", 5), credit("after", "alice", 5)])
    ledger.uow.refuse_entries_of.add("bad")
    (applied,) = ledger.apply("after")
    assert (applied.found, applied.newly_applied) == (True, False)
    assert [ledger.outcome(i) for i in ids] == [("pending", None)] * 2


def test_an_operation_whose_failure_is_refused_too_raises_after_the_others_applied(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "refused", account_id="alice", amount=10)
    ledger.accept("credit", "other", account_id="alice", amount=10)
    ledger.uow.refuse_entries_of.add("refused")
    ledger.uow.refuse_outcomes_of.add("refused")
    with pytest.raises(InvalidData):
        ledger.apply("refused", "other")
    assert ledger.outcome("other") == ("succeeded", None)
    assert ledger.outcome("refused") == ("pending", None)


def test_an_operation_recorded_against_the_rules_ends_failed_without_locking_anything(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "tampered", account_id="alice", amount=0)
    ledger.accept("credit", "fine", account_id="alice", amount=3)
    ledger.uow.locked.clear()
    ledger.apply("tampered", "fine")
    assert ledger.outcome("tampered") == ("failed", "internal_error")
    message = ledger.record("tampered").error_message or ""
    assert message.startswith("the recorded request breaks the rules (amount:")
    assert ledger.outcome("fine") == ("succeeded", None)
    assert ledger.uow.locked == [["alice"]]
    assert ledger.balances("alice") == (3, 0, 3)


def test_a_busy_lock_raises_lock_busy_every_time_and_never_ends_the_operation(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    ledger.uow.busy_accounts.add("alice")
    for _ in range(limits.operation_attempts_max + 1):
        with pytest.raises(LockBusy):
            ledger.apply("c1")
    assert ledger.outcome("c1") == ("pending", None)
    ledger.uow.busy_accounts.clear()
    ledger.apply("c1")
    assert ledger.outcome("c1") == ("succeeded", None)


def test_a_database_outage_is_raised_for_a_retry_and_changes_nothing(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    ledger.uow.outage = True
    with pytest.raises(TransientError):
        ledger.apply("c1")
    ledger.uow.outage = False
    assert ledger.outcome("c1") == ("pending", None)


def test_a_hold_that_appears_under_the_locks_makes_the_service_choose_them_again(
    ledger: Service, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.funded("alice", 100)
    ledger.accept("capture", "c1", hold_id="h1", amount=10)

    def hold_created_meanwhile(store: Store) -> None:
        store.holds["h1"] = HoldState("h1", "alice", None, 30, 0, 30, HoldStatus.active, None)
        alice = store.accounts["alice"]
        store.accounts["alice"] = replace(alice, held=30)

    ledger.uow.before_next_lock = hold_created_meanwhile
    ledger.uow.locked.clear()
    ledger.apply("c1")
    assert ledger.uow.locked == [[], ["alice"]]
    assert ledger.outcome("c1") == ("succeeded", None)
    assert caplog.records == []  # chosen again, not failed and isolated


# --- giving up --------------------------------------------------------------------------


def test_give_up_ends_pending_operations_failed_and_leaves_completed_ones_alone(
    ledger: Service,
) -> None:
    ledger.open("alice")
    ledger.run("credit", "done", account_id="alice", amount=5)
    ledger.accept("credit", "stuck", account_id="alice", amount=5)
    given_up = service._give_up(["done", "stuck", "ghost"], ledger.uow, "gave up", ledger.clock)
    assert [(a.operation_id, a.newly_applied) for a in given_up] == [
        ("done", False),
        ("stuck", True),
        ("ghost", False),
    ]
    assert ledger.outcome("done") == ("succeeded", None)
    assert ledger.outcome("stuck") == ("failed", "internal_error")
    assert ledger.record("stuck").error_message == "gave up"
    assert ledger.balances("alice") == (5, 0, 5)
    assert "stuck" in ledger.unpublished()


# --- the recovery sweep -----------------------------------------------------------------


def sweep(ledger: Service) -> tuple[list[str], list[service.Applied]]:
    return service.resend_stuck_operations(
        ledger.uow,
        ledger.enqueue,
        older_than_s=limits.pending_resend_after_s,
        limit=limits.sweep_batch_size_max,
        clock=ledger.clock,
    )


def test_the_sweep_sends_a_group_first_then_each_alone_and_ends_one_resent_too_often(
    ledger: Service,
) -> None:
    ledger.open("alice")
    for operation_id in ("first-1", "first-2", "again-1", "again-2", "too-often"):
        ledger.accept("credit", operation_id, account_id="alice", amount=1)
    resends = {"again-1": 1, "again-2": limits.pending_resends_max - 1}
    resends["too-often"] = limits.pending_resends_max
    for operation_id, count in resends.items():
        ledger.uow.committed.resends[operation_id] = (ledger.clock.now, count)
    ledger.clock.advance(limits.pending_resend_after_s + 1)
    sent, given_up = sweep(ledger)
    assert ledger.enqueued == [["first-1", "first-2"], ["again-1"], ["again-2"]]
    assert sent == ["first-1", "first-2", "again-1", "again-2"]
    assert [a.operation_id for a in given_up] == ["too-often"]
    assert ledger.outcome("too-often") == ("failed", "internal_error")
    assert ledger.record("too-often").error_message == service.RESENT_TOO_OFTEN_MESSAGE


def test_the_sweep_leaves_operations_sent_recently(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    ledger.clock.advance(limits.pending_resend_after_s - 1)
    assert sweep(ledger) == ([], [])
    assert ledger.enqueued == []


def test_the_sweep_counts_no_resend_while_the_broker_refuses_it(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    ledger.clock.advance(limits.pending_resend_after_s + 1)

    def broker_down(operation_ids: list[str]) -> None:
        raise TransientError("broker down")

    with pytest.raises(TransientError):
        service.resend_stuck_operations(
            ledger.uow, broker_down, older_than_s=limits.pending_resend_after_s, limit=10
        )
    assert "c1" not in ledger.uow.committed.resends
    sweep(ledger)
    assert ledger.uow.committed.resends["c1"][1] == 1


def test_the_sweep_never_resends_a_completed_operation(ledger: Service) -> None:
    ledger.open("alice")
    ledger.run("credit", "c1", account_id="alice", amount=1)
    ledger.clock.advance(limits.pending_resend_after_s + 1)
    assert sweep(ledger) == ([], [])


def test_apply_operation_is_a_batch_of_one(ledger: Service) -> None:
    ledger.open("alice")
    ledger.accept("credit", "c1", account_id="alice", amount=1)
    applied = service.apply_operation("c1", ledger.uow, ledger.clock)
    assert (applied.operation_id, applied.newly_applied) == ("c1", True)


def test_an_expiry_is_never_taken_for_a_client_operation(ledger: Service) -> None:
    ledger.funded("alice", 10)
    operation = Operation("@expiry:h1", OperationType.expiry, {"hold_id": "h1"})
    service.accept_operation(operation, ledger.uow)
    ledger.apply("@expiry:h1")
    assert ledger.outcome("@expiry:h1") == ("failed", "internal_error")
    assert ledger.balances("alice") == (10, 0, 10)


def test_a_task_of_operations_that_fit_one_transaction_commits_once(ledger: Service) -> None:
    ledger.funded("alice", 100)
    ledger.open("bob")
    for n in range(5):
        ledger.accept(
            "transfer", f"t{n}", source_account_id="alice", destination_account_id="bob", amount=1
        )
    commits, rollbacks = ledger.uow.commits, ledger.uow.rollbacks
    ledger.apply(*(f"t{n}" for n in range(5)))
    assert (ledger.uow.commits - commits, ledger.uow.rollbacks - rollbacks) == (1, 0)
    assert ledger.uow.locked[-1] == ["alice", "bob"]


def test_the_sweep_resends_at_most_its_limit_oldest_first(ledger: Service) -> None:
    ledger.open("alice")
    for n in range(3):
        ledger.accept("credit", f"c{n}", account_id="alice", amount=1)
        ledger.clock.advance(0.001)
    ledger.clock.advance(limits.pending_resend_after_s + 1)
    sent, _ = service.resend_stuck_operations(
        ledger.uow, ledger.enqueue, older_than_s=limits.pending_resend_after_s, limit=2
    )
    assert sent == ["c0", "c1"]
