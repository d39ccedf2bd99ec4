"""Parallel safety: random transfers, each sent twice, through 3 workers while one is killed.

Afterwards every operation is terminal and applied once, money is conserved,
no balance is below its floor, every balance equals the sum of its entries,
every outcome agrees with a sequential replay in ledger order, and every
operation's event is on `billing.responses`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from tests.conftest import Workers
from tests.support.stack import Client, EventLog, wait_until

ACCOUNTS = 20
TRANSFERS = 1_200
OPENING_BALANCE = 5_000
SENDER_THREADS = 12


def test_random_transfers_sent_twice_under_worker_kills_keep_every_invariant(
    client: Client,
    events: EventLog,
    workers: Workers,
    # A killed worker leaves the events of what it committed to the outbox
    # relay, which beat schedules: started here, not left to an earlier test.
    beat: Any,
    engine: Any,
    new_id: Any,
    metrics: dict[str, str],
) -> None:
    rng = random.Random(20261124)
    accounts = [new_id(f"acct{i:02d}") for i in range(ACCOUNTS)]
    for account in accounts:
        client.create_account(account)
    credits = [new_id(f"open-{account}") for account in accounts]
    for account, operation_id in zip(accounts, credits, strict=True):
        assert (
            client.submit(
                "credits",
                {"operation_id": operation_id, "account_id": account, "amount": OPENING_BALANCE},
            ).status_code
            == 202
        )
    for operation_id in credits:
        assert client.wait(operation_id)["status"] == "succeeded"

    transfers = {}
    for i in range(TRANSFERS):
        source, destination = rng.sample(accounts, 2)
        transfers[new_id(f"t{i:05d}")] = {
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": rng.randint(1, 2_500),
        }
    sends = [op for op in transfers for _ in range(2)]
    rng.shuffle(sends)

    statuses: dict[str, list[int]] = {op: [] for op in transfers}
    lock = threading.Lock()

    def send(operation_id: str) -> None:
        response = client.submit(
            "transfers", {"operation_id": operation_id, **transfers[operation_id]}
        )
        with lock:
            statuses[operation_id].append(response.status_code)

    killer = threading.Thread(
        target=_kill_workers_midway, args=(workers, statuses, lock), daemon=True
    )
    started = time.monotonic()
    killer.start()
    with ThreadPoolExecutor(SENDER_THREADS) as pool:
        list(pool.map(send, sends))
    accepted_s = time.monotonic() - started
    ids = list(transfers)
    wait_until(lambda: _pending(engine, ids) == 0, 300, "every transfer to be terminal", 0.1)
    elapsed_s = time.monotonic() - started
    killer.join(timeout=60)

    metrics["parallel run"] = (
        f"{TRANSFERS} transfers x2 sends via HTTP, 3 workers x concurrency 2, with kills: "
        f"accepted in {accepted_s:.1f}s, all terminal in {elapsed_s:.1f}s "
        f"= {TRANSFERS / elapsed_s:.0f} transfers/s ({2 * TRANSFERS / accepted_s:.0f} requests/s)"
    )

    assert all(sorted(codes) == [200, 202] for codes in statuses.values()), Counter(
        tuple(sorted(c)) for c in statuses.values()
    )
    rows = _operations(engine, credits + ids)
    assert all(row.status in ("succeeded", "failed") for row in rows)
    failures = Counter(row.error_code for row in rows if row.status == "failed")
    assert set(failures) <= {"insufficient_funds"}, failures
    assert failures["insufficient_funds"] > 0, "the workload should exercise insufficient funds"

    entry_counts = _entry_counts(engine, credits + ids)
    for row in rows:
        expected = 2 if row.status == "succeeded" else 0
        assert entry_counts.get(row.operation_id, 0) == expected, row.operation_id

    balances = _replay_in_ledger_order(rows, transfers, accounts)
    stored = {account: client.account(account) for account in accounts}
    for account in accounts:
        assert stored[account]["posted"] == balances[account], account
        assert stored[account]["available"] >= 0, account
    assert sum(balances.values()) == ACCOUNTS * OPENING_BALANCE
    assert _entry_sums(engine, accounts) == balances

    seen = events.wait_for(credits + ids, timeout_s=120)
    for row in rows:
        copies = seen[row.operation_id]
        assert {c["routing_key"] for c in copies} == {f"operation.{row.type}.{row.status}"}
        assert all(c["body"] == copies[0]["body"] for c in copies)
        assert copies[0]["body"]["status"] == row.status


def _kill_workers_midway(
    workers: Workers, statuses: dict[str, list[int]], lock: threading.Lock
) -> None:
    """SIGKILL one worker's pool child a third of the way, a whole worker at two thirds."""

    def sent() -> int:
        with lock:
            return sum(len(codes) for codes in statuses.values())

    wait_until(lambda: sent() >= TRANSFERS * 2 // 3, 300, "a third of the sends")
    victim = workers.processes[0]
    children = victim.children()
    assert children, "the worker should have pool children"
    import os
    import signal

    os.kill(children[0], signal.SIGKILL)
    wait_until(lambda: sent() >= TRANSFERS * 4 // 3, 300, "two thirds of the sends")
    whole = workers.processes[1]
    whole.kill()
    workers.processes.remove(whole)
    workers.start(concurrency=2)


def _pending(engine: Any, ids: list[str]) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM operations "
                    "WHERE operation_id = ANY(:ids) AND status = 'pending'"
                ),
                {"ids": ids},
            ).scalar_one()
        )


def _operations(engine: Any, ids: list[str]) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT operation_id, type, status, error_code, ledger_seq, request "
                    "FROM operations WHERE operation_id = ANY(:ids) ORDER BY ledger_seq"
                ),
                {"ids": ids},
            )
        )


def _entry_counts(engine: Any, ids: list[str]) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT operation_id, count(*) AS n FROM entries WHERE operation_id = ANY(:ids) "
                "GROUP BY operation_id"
            ),
            {"ids": ids},
        )
        return {row.operation_id: row.n for row in rows}


def _entry_sums(engine: Any, accounts: list[str]) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT account_id, sum(amount) AS total FROM entries WHERE account_id = ANY(:ids) "
                "AND bucket = 'posted' GROUP BY account_id"
            ),
            {"ids": accounts},
        )
        return {row.account_id: int(row.total) for row in rows}


def _replay_in_ledger_order(
    rows: list[Any], transfers: dict[str, dict[str, Any]], accounts: list[str]
) -> dict[str, int]:
    """Apply the operations one by one in ledger order and check each recorded outcome."""
    balances = dict.fromkeys(accounts, 0)
    for row in rows:
        if row.type == "credit":
            balances[row.request["account_id"]] += row.request["amount"]
            continue
        transfer = transfers[row.operation_id]
        source, destination = transfer["source_account_id"], transfer["destination_account_id"]
        fits = balances[source] >= transfer["amount"]
        assert row.status == ("succeeded" if fits else "failed"), (
            f"{row.operation_id} (seq {row.ledger_seq}) disagrees with the sequential replay"
        )
        if fits:
            balances[source] -= transfer["amount"]
            balances[destination] += transfer["amount"]
    return balances
