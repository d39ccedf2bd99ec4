"""Garbage on every queue the workers consume stops no worker and moves no honest money.

Thousands of messages, drawn from one seed, go to the Celery task queues
(ledger tasks, periodic), the AMQP intake and the workers' control
queue: random bytes, random JSON of any depth and size, odd content types and
encodings, Celery envelopes with random arguments for every task the workers
register (and unknown ones), and well-typed but hostile operations (negative,
huge and float amounts, ids at and over their limits, a thousand ids, ids of
operations that exist), some aimed at the honest accounts in ways the
contract refuses. Then every worker must be alive and consuming, honest
operations over HTTP, a batch and the intake must all end as expected, no
honest balance may have moved, `billing audit` must pass, and what the
contract refuses must be in a dead-letter queue rather than gone.

The seed is printed and is in the failure message; set BILLING_GARBAGE_SEED
to run the same garbage again (the ids differ per run, the shapes do not).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from billing.config import Settings
from tests.conftest import Workers
from tests.support import stack
from tests.support.garbage import INTAKE, TASKS, Garbage, Generator, Targets
from tests.support.garbage_broker import GarbageBroker, WorkerWatch, digest

MESSAGES = 3_000
SEED = int(os.environ.get("BILLING_GARBAGE_SEED") or random.SystemRandom().randrange(2**32))
# Bounds on the waits (not assertions on speed): how long the workers may take
# to work through the garbage, and the honest operations after it.
DRAIN_WAIT_S = 150
HONEST_WAIT_S = 60
CONSUMERS_WAIT_S = 20
DEAD_LETTER_WAIT_S = 30
# BILLING_GARBAGE_QUEUES=requests,tasks narrows the garbage to some queues (to
# find what else fails while a known failure is being fixed).
QUEUES = [q for q in os.environ.get("BILLING_GARBAGE_QUEUES", "").split(",") if q] or None


def _task_names() -> list[str]:
    from tasks.celery_app import app

    app.loader.import_default_modules()
    return sorted(app.tasks)


@pytest.fixture
def garbage_broker(settings: Settings, workers: Workers) -> Iterator[GarbageBroker]:
    """The broker, and afterwards a usable stack for the tests that follow this one.

    Garbage left over (the workers died on it) is purged, and a worker that
    died or lost its consumer is replaced, so one failure here does not fail
    every later test too.
    """
    broker = GarbageBroker(settings)
    watch = WorkerWatch(workers.processes)
    yield broker
    lost = watch.lost()
    for process in lost:
        workers.processes.remove(process)
        process.kill()
        process.stop()
    # Purged once the lost workers are gone, since their unacknowledged
    # messages go back to the queues when they die.
    broker.purge_work_queues()
    for _ in lost:
        workers.start()


def _open_honest_ledger(client: stack.Client, run: str) -> dict[str, Any]:
    """Honest accounts with money, and an active hold the garbage must not touch."""
    accounts = {name: f"honest-{name}-{run}" for name in "abcde"}
    for name, account in accounts.items():
        client.create_account(account, "EUR" if name == "e" else "USD")
    credits = {"a": 10_000, "b": 5_000, "d": 2_000, "e": 3_000}
    operations = []
    for name, amount in credits.items():
        operation_id = f"honest-credit-{name}-{run}"
        body = {"operation_id": operation_id, "account_id": accounts[name], "amount": amount}
        assert client.run("credits", body)["status"] == "succeeded"
        operations.append(operation_id)
    hold_id = f"honest-hold-{run}"
    hold = {"operation_id": hold_id, "account_id": accounts["a"], "amount": 1_000}
    assert client.run("holds", {**hold, "expires_in": 3600})["status"] == "succeeded"
    return {"accounts": accounts, "operations": [*operations, hold_id], "hold": hold_id}


def _open_garbage_ledger(client: stack.Client, run: str) -> tuple[list[str], list[str]]:
    """Accounts and operations of the garbage's own, so well-formed garbage finds something."""
    accounts = [f"junk-{i}-{run}" for i in range(6)]
    operations = []
    for account in accounts:
        client.create_account(account)
        operation_id = f"junk-credit-{account}"
        body = {"operation_id": operation_id, "account_id": account, "amount": 10**6}
        assert client.run("credits", body)["status"] == "succeeded"
        operations.append(operation_id)
    return accounts, operations


def _balances(client: stack.Client, accounts: dict[str, str]) -> dict[str, tuple[int, int]]:
    return {
        name: (body["posted"], body["held"])
        for name, account in accounts.items()
        for body in [client.account(account)]
    }


def _honest_operations(
    client: stack.Client, settings: Settings, accounts: dict[str, str], run: str
) -> list[str]:
    """Honest operations over HTTP, in a batch and on the intake; the failures found."""
    from tests.e2e.test_intake import publish

    a, b, c, d, e = (accounts[name] for name in "abcde")
    deadline = time.monotonic() + HONEST_WAIT_S
    failures: list[str] = []

    def expect(operation_id: str, status: str, code: str | None = None) -> None:
        found: tuple[str, str | None] = ("unknown", None)
        while time.monotonic() < deadline:
            response = client.get(f"/v1/operations/{operation_id}", params={"wait": 5})
            if response.status_code == 200:
                outcome = response.json()
                found = (outcome["status"], (outcome.get("error") or {}).get("code"))
                if found[0] != "pending":
                    break
            else:
                found = (f"HTTP {response.status_code}", None)
                time.sleep(0.2)
        if found != (status, code):
            failures.append(f"honest {operation_id}: expected {(status, code)}, got {found}")

    def post(path: str, body: dict[str, Any]) -> None:
        response = client.submit(path, body)
        if response.status_code != 202:
            failures.append(f"honest POST {path}: {response.status_code} {response.text:.300}")

    def op(name: str) -> str:
        return f"honest-{name}-{run}"

    post(
        "transfers",
        {
            "operation_id": op("t1"),
            "source_account_id": a,
            "destination_account_id": c,
            "amount": 1_500,
        },
    )
    post("debits", {"operation_id": op("d1"), "account_id": b, "amount": 500})
    post("debits", {"operation_id": op("d2"), "account_id": d, "amount": 10_000})
    post(
        "holds",
        {"operation_id": op("h1"), "account_id": a, "amount": 700, "destination_account_id": c},
    )
    expect(op("t1"), "succeeded")
    expect(op("d1"), "succeeded")
    expect(op("d2"), "failed", "insufficient_funds")
    expect(op("h1"), "succeeded")
    post(f"holds/{op('h1')}/capture", {"operation_id": op("k1"), "amount": 300})
    expect(op("k1"), "succeeded")
    batch = [
        {"type": "credit", "operation_id": op("b1"), "account_id": c, "amount": 100},
        {
            "type": "transfer",
            "operation_id": op("b2"),
            "source_account_id": c,
            "destination_account_id": b,
            "amount": 1_900,
        },
        {"type": "debit", "operation_id": op("b3"), "account_id": b, "amount": 1},
        {
            "type": "transfer",
            "operation_id": op("b4"),
            "source_account_id": e,
            "destination_account_id": a,
            "amount": 10,
        },
    ]
    response = client.post("/v1/operations/batch", {"operations": batch})
    if response.status_code != 202:
        failures.append(f"honest batch: {response.status_code} {response.text:.300}")
    for name in ("b1", "b2", "b3"):
        expect(op(name), "succeeded")
    expect(op("b4"), "failed", "currency_mismatch")
    publish(
        settings,
        f'{{"type": "credit", "operation_id": "{op("i1")}", "account_id": "{a}", "amount": 42}}',
    )
    publish(
        settings,
        f'{{"type": "transfer", "operation_id": "{op("i2")}", "source_account_id": "{b}", '
        f'"destination_account_id": "{d}", "amount": 100}}',
    )
    expect(op("i1"), "succeeded")
    expect(op("i2"), "succeeded")
    return failures


def _audit(settings: Settings) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit"],
        env=stack.environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 0:
        return []
    return [f"billing audit exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"]


def _dead_letter_failures(
    broker: GarbageBroker, sent: list[Garbage], rejected_events: int
) -> list[str]:
    """Refused garbage must be parked in its dead-letter queue; the intake's also announced.

    A quorum queue dead-letters at least once but not at once (the broker
    moves what was rejected in the background, and a message being handled
    when the queues looked empty is rejected later), so the dead-letter
    queues are read until every refused message is found or the wait ends.
    """
    failures = []
    dead_requests: list[bytes] = []
    dead_tasks: list[bytes] = []
    deadline = time.monotonic() + DEAD_LETTER_WAIT_S
    while True:
        dead_requests += [body for _, body, _ in broker.take_all("billing.requests.dead")]
        dead_tasks += [body for _, body, _ in broker.take_all("billing.tasks.dead")]
        vanished, checked, examples = _vanished(sent, dead_requests, dead_tasks)
        if not vanished or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if vanished:
        failures.append(
            f"{sum(vanished.values())} of {checked} refused messages are in no "
            f"dead-letter queue: {dict(vanished)}; for example:\n  " + "\n  ".join(examples)
        )
    refused_intake = sum(1 for m in sent if m.fate == "refused" and m.queue == INTAKE)
    if rejected_events < refused_intake:
        failures.append(
            f"{rejected_events} request.rejected events for {refused_intake} refused "
            "intake messages"
        )
    return failures


def _vanished(
    sent: list[Garbage], dead_requests: list[bytes], dead_tasks: list[bytes]
) -> tuple[Counter[str], int, list[str]]:
    """The refused messages found in no dead-letter queue (by kind), how many were checked,
    and a few of those missing, described."""
    parked = {digest(body) for body in dead_requests}
    parked |= {digest(body) for body in dead_tasks}
    # A submit_request task the gate refuses is parked as the request it carries,
    # in the intake's form: found by its operation id.
    parked |= {_parked_request_id(body) for body in dead_requests} - {None}
    # The periodic queue has no dead-letter exchange on purpose (celeryconfig:
    # runs past their `expires` are dropped there), and garbage on the control
    # queue has no place to go: only the ledger, result and intake queues are checked.
    checked = [m for m in sent if m.fate == "refused" and m.queue in (INTAKE, TASKS)]
    missing = [
        m
        for m in checked
        if digest(m.body) not in parked
        and _submitted_id(m) not in parked
        and not _is_anonymous_submit(m)
    ]
    vanished = Counter(f"{m.queue}/{m.kind}" for m in missing)
    examples = [
        f"{m.queue}/{m.kind}: content type {m.content_type!r}, encoding "
        f"{m.content_encoding!r}, headers {m.headers!r}, {len(m.body)} bytes: {m.body[:120]!r}"
        for m in missing[:3]
    ]
    # Those with no operation id to find them by are counted instead.
    anonymous_sent = sum(
        1 for m in checked if digest(m.body) not in parked and _is_anonymous_submit(m)
    )
    anonymous_parked = sum(1 for body in dead_requests if _parked_request_id(body) is None)
    if anonymous_parked < anonymous_sent:
        vanished["submit_request without an operation id"] = anonymous_sent - anonymous_parked
    return vanished, len(checked), examples


def _parked_request_id(body: bytes) -> str | None:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    operation_id = request.get("operation_id") if isinstance(request, dict) else None
    return f"request:{operation_id}" if isinstance(operation_id, str) else None


def _submitted_id(message: Garbage) -> str | None:
    """The operation id a submit_request envelope carries, as `_parked_request_id` names it."""
    if message.headers is None or message.headers.get("task") != "billing.submit_request":
        return None
    try:
        args = json.loads(message.body)[0]
        operation_id = args[1].get("operation_id")
    except (ValueError, RecursionError, LookupError, TypeError, AttributeError):
        return None
    return f"request:{operation_id}" if isinstance(operation_id, str) else None


def _is_anonymous_submit(message: Garbage) -> bool:
    return (
        message.headers is not None
        and message.headers.get("task") == "billing.submit_request"
        and _submitted_id(message) is None
    )


def _worker_failures(watch: WorkerWatch, broker: GarbageBroker) -> list[str]:
    """Every worker alive, without a critical error, and consuming each of its queues."""
    failures = []
    for process in watch.lost():
        state = "alive" if process.alive() else f"dead (exit {process.popen.returncode})"
        errors = "\n  ".join(watch.fatal[process.name][:3]) or "none logged"
        failures.append(f"worker {process.name} is lost, {state}; its critical errors:\n  {errors}")
    wanted = len(watch.processes)
    depths: dict[str, tuple[int, int]] = {}

    def consuming() -> bool:
        depths.update(broker.depths())
        return all(consumers >= wanted for _, consumers in depths.values())

    with contextlib.suppress(TimeoutError):
        stack.wait_until(consuming, CONSUMERS_WAIT_S, "every worker to consume", interval_s=0.25)
    for queue, (count, consumers) in depths.items():
        if consumers < wanted or count:
            failures.append(f"{queue}: {count} messages left, {consumers} consumers of {wanted}")
    return failures


def _honest_failures(
    client: stack.Client, settings: Settings, honest: dict[str, Any], before: dict[str, Any]
) -> list[str]:
    """Honest operations after the garbage end as they should, and leave the right balances."""
    failures = _honest_operations(client, settings, honest["accounts"], honest["run"])
    expected = {
        "a": (before["a"][0] - 1_500 - 300 + 42, before["a"][1]),
        "b": (before["b"][0] - 500 + 1_900 - 1 - 100, 0),
        "c": (0, 0),
        "d": (before["d"][0] + 100, 0),
        "e": (before["e"][0], 0),
    }
    after = _balances(client, honest["accounts"])
    for name, balance in expected.items():
        if after[name] != balance:
            failures.append(
                f"honest account {name}: (posted, held) {after[name]}, expected {balance} "
                f"(before the garbage {before[name]}); entries of others: "
                f"{_foreign_entries(settings, honest['accounts'][name], honest['run'])}"
            )
    return failures


def _foreign_entries(settings: Settings, account_id: str, run: str) -> list[Any]:
    """The entries of an honest account that no honest operation made, with their requests."""
    engine = stack.engine_for(settings)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    text(
                        "SELECT e.operation_id, e.type, e.bucket, e.amount, o.request "
                        "FROM entries e JOIN operations o USING (operation_id) "
                        "WHERE e.account_id = :account AND e.operation_id NOT LIKE :honest"
                    ),
                    {"account": account_id, "honest": f"honest-%-{run}"},
                )
            )
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_garbage_on_every_queue_stops_no_worker_and_moves_no_honest_money(
    settings: Settings,
    client: stack.Client,
    workers: Workers,
    garbage_broker: GarbageBroker,
    new_id: Any,
    metrics: dict[str, str],
    tmp_path: Path,
) -> None:
    print(f"garbage seed: {SEED} (BILLING_GARBAGE_SEED={SEED} repeats it)")
    run = new_id("r").removeprefix("r-")
    honest = _open_honest_ledger(client, run)
    junk_accounts, junk_operations = _open_garbage_ledger(client, run)
    before = _balances(client, honest["accounts"])
    marker = tmp_path / "unpickled"
    targets = Targets(
        run=run,
        garbage_accounts=junk_accounts,
        garbage_operations=junk_operations,
        honest_accounts=list(honest["accounts"].values()),
        honest_operations=honest["operations"],
        honest_hold=honest["hold"],
        task_names=_task_names(),
        marker_path=str(marker),
    )
    for queue in ("billing.responses", "billing.requests.dead", "billing.tasks.dead"):
        garbage_broker.take_all(queue)
    watch = WorkerWatch(workers.processes)

    sent = Generator(SEED, targets).messages(MESSAGES, QUEUES)
    started = time.monotonic()
    failures = [f"the broker refused: {r}" for r in garbage_broker.publish(sent)]
    published_s = time.monotonic() - started
    print(f"published {len(sent)} messages in {published_s:.1f}s")
    garbage_broker.wait_drained(started + DRAIN_WAIT_S, lambda: not watch.lost())
    drained_s = time.monotonic() - started
    print(f"garbage consumed (or a worker lost) after {drained_s:.1f}s")

    failures += _worker_failures(watch, garbage_broker)
    if len(watch.lost()) < len(watch.processes):
        failures += _honest_failures(client, settings, {**honest, "run": run}, before)
    else:
        failures.append("every worker is lost: honest operations not tried")
    failures += _audit(settings)
    events = garbage_broker.take_all("billing.responses")
    rejected_events = sum(1 for key, _, _ in events if key == "request.rejected")
    failures += _dead_letter_failures(garbage_broker, sent, rejected_events)
    if marker.exists():
        failures.append("a pickle on a queue was unpickled: the marker file exists")
    print(f"checked after {time.monotonic() - started:.1f}s")

    kinds = Counter(f"{m.queue}/{m.kind}" for m in sent)
    fates = Counter(m.fate for m in sent)
    size_mib = sum(len(m.body) for m in sent) / 2**20
    metrics["garbage"] = (
        f"{len(sent)} messages ({size_mib:.1f} MiB, seed {SEED}), published in "
        f"{published_s:.0f}s, consumed by {drained_s:.0f}s; fates {dict(fates)}"
    )
    summary = f"seed {SEED}; {len(sent)} messages: {dict(sorted(kinds.items()))}"
    assert not failures, summary + "\n\n" + "\n\n".join(failures)
