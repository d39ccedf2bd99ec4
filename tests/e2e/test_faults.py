"""Nothing lost, nothing doubled: thousands of mixed operations while components are killed.

The test runs a stack of its own on a throwaway PostgreSQL cluster and a
throwaway RabbitMQ node, because it restarts both. Operations go in over HTTP
and over the AMQP intake, 10% of them twice, while worker children and a
worker main process are SIGKILLed, RabbitMQ restarts and PostgreSQL restarts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from kombu import Connection, Exchange, Producer
from sqlalchemy import text

from billing.config import Settings
from tests.support import stack
from tests.support.throwaway import ThrowawayPostgres, ThrowawayRabbit

OPERATIONS = 2_500
ACCOUNTS = 40
AMQP_SHARE = 0.2
REPEAT_SHARE = 0.1
HTTP_THREADS = 8
# The HTTP client's own timeout. The API answers within its bounded waits
# (enqueue_wait_max_s, then a 503) well before it, even while RabbitMQ or
# PostgreSQL restarts: a request still unanswered by then is a failure.
CLIENT_TIMEOUT_S = 15
ENTRIES_BY_TYPE = {"credit": 2, "debit": 2, "transfer": 2, "hold": 1, "capture": 3, "release": 1}


@pytest.fixture(scope="module")
def faulty_stack() -> Any:
    suffix = uuid.uuid4().hex[:6]
    postgres = ThrowawayPostgres(f"fault{suffix}", stack.free_port())
    rabbit = ThrowawayRabbit(f"fault{suffix}", stack.free_port(), stack.free_port())
    settings = Settings(
        database_url=postgres.url,
        broker_url=rabbit.url,
        api_tokens=(f"fault-token-{suffix}",),
        amqp_prefix=f"fault{suffix}",
    )
    processes: list[stack.Process] = []
    try:
        # Each takes seconds to start, and neither needs the other.
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(postgres.create), pool.submit(rabbit.start)]:
                started.result()
        stack.prepare_database(settings)
        # The workers start while the API does: each takes seconds to be ready.
        workers = [stack.start_worker(settings, f"fw{i}", wait=False) for i in range(3)]
        processes.extend(workers)
        port = stack.free_port()
        processes.append(stack.start_api(settings, port))
        for worker in workers:
            stack.wait_ready(worker)
        processes.append(stack.start_beat(settings))
        yield settings, postgres, rabbit, f"http://127.0.0.1:{port}", workers, processes
    finally:
        stack.discard_all(processes)
        with ThreadPoolExecutor(2) as pool:
            removed = [pool.submit(rabbit.remove), pool.submit(postgres.drop)]
        for done in removed:
            done.result()


class Plan:
    """A seeded mix of every operation type over a set of funded accounts."""

    def __init__(self, rng: random.Random, accounts: list[str], run: str) -> None:
        self.rng, self.accounts, self.run = rng, accounts, run
        self.holds: list[str] = []
        self.operations: list[tuple[str, dict[str, Any]]] = []

    def build(self, count: int) -> None:
        kinds = ["credit", "debit", "transfer", "transfer", "hold", "capture", "release"]
        for i in range(count):
            kind = self.rng.choice(kinds)
            if kind in ("capture", "release") and not self.holds:
                kind = "hold"
            self.operations.append(self._make(kind, f"{kind[:2]}{i}-{self.run}"))

    def _make(self, kind: str, operation_id: str) -> tuple[str, dict[str, Any]]:
        rng, account = self.rng, self.rng.choice(self.accounts)
        body: dict[str, Any] = {"operation_id": operation_id}
        if kind in ("credit", "debit"):
            body |= {"account_id": account, "amount": rng.randint(1, 3_000)}
        elif kind == "transfer":
            source, destination = rng.sample(self.accounts, 2)
            body |= {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": rng.randint(1, 3_000),
            }
        elif kind == "hold":
            body |= {"account_id": account, "amount": rng.randint(1, 2_000)}
            if rng.random() < 0.3:
                body["destination_account_id"] = rng.choice(self.accounts)
            if rng.random() < 0.2:
                body["expires_in"] = rng.randint(1, 5)
            self.holds.append(operation_id)
        elif kind == "capture":
            body["hold_id"] = rng.choice(self.holds)
            if rng.random() < 0.6:
                body |= {"amount": rng.randint(1, 1_500), "final": rng.random() < 0.5}
        else:
            body["hold_id"] = rng.choice(self.holds)
        return kind, body


def _path(kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind in ("capture", "release"):
        rest = {k: v for k, v in body.items() if k != "hold_id"}
        return f"/v1/holds/{body['hold_id']}/{kind}", rest
    return f"/v1/{kind}s", body


class HttpSender:
    """Submits over HTTP like a careful client: retries a 503 or a dropped connection."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.local = threading.local()
        self.token = token
        self.statuses: Counter[int] = Counter()
        # Requests the client gave up on at its own timeout (sent again after).
        self.timeouts = 0
        self.slowest_s = 0.0
        self.lock = threading.Lock()

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = f"Bearer {self.token}"
        return self.local.session  # type: ignore[no-any-return]

    def send(self, kind: str, body: dict[str, Any]) -> bool:
        path, payload = _path(kind, body)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = self._session().post(
                    self.base_url + path, json=payload, timeout=CLIENT_TIMEOUT_S
                )
            except requests.RequestException as error:
                if isinstance(error, requests.Timeout):
                    with self.lock:
                        self.timeouts += 1
                time.sleep(0.5)
                continue
            with self.lock:
                self.statuses[response.status_code] += 1
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            if response.status_code in (200, 202):
                return True
            if response.status_code != 503:
                raise AssertionError(f"{path}: {response.status_code} {response.text}")
            time.sleep(0.3)
        return False


class AmqpSender:
    """Publishes intake requests with confirms, retrying across a broker restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exchange = Exchange(
            settings.amqp_name("billing.requests"), type="direct", durable=True
        )
        self.lock = threading.Lock()

    def send(self, kind: str, body: dict[str, Any]) -> bool:
        message = json.dumps({"type": kind, **body})
        with self.lock:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    with Connection(
                        self.settings.broker_url, transport_options={"confirm_publish": True}
                    ) as connection:
                        Producer(connection.channel()).publish(
                            message,
                            exchange=self.exchange,
                            routing_key="operation",
                            content_type="application/json",
                            delivery_mode=2,
                        )
                    return True
                except Exception:
                    time.sleep(0.5)
        return False


def _chaos(
    rng: random.Random,
    progress: Any,
    workers: list[stack.Process],
    settings: Settings,
    postgres: ThrowawayPostgres,
    rabbit: ThrowawayRabbit,
    processes: list[stack.Process],
    log: list[str],
) -> None:
    """At random moments: kill a child, kill a worker and start another, restart both services."""
    moments = sorted(rng.uniform(0.1, 0.8) for _ in range(4))
    actions = ["kill-child", "kill-worker", "restart-rabbitmq", "restart-postgres"]
    rng.shuffle(actions)
    for moment, action in zip(moments, actions, strict=True):
        stack.wait_until(lambda m=moment: progress() >= m, 600, f"{action} moment")
        log.append(f"{action} at {progress():.0%}")
        if action == "kill-child":
            live = [w for w in workers if w.alive() and w.children()]
            if live:
                os.kill(live[0].children()[0], signal.SIGKILL)
        elif action == "kill-worker":
            victim = next(w for w in workers if w.alive())
            victim.kill()
            replacement = stack.start_worker(settings, f"fw{len(processes)}")
            workers.append(replacement)
            processes.append(replacement)
        elif action == "restart-rabbitmq":
            rabbit.restart()
        else:
            postgres.restart()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_mixed_operations_survive_killed_workers_and_restarted_broker_and_database(
    faulty_stack: Any, metrics: dict[str, str]
) -> None:
    settings, postgres, rabbit, base_url, workers, processes = faulty_stack
    rng = random.Random(424242)
    run = uuid.uuid4().hex[:6]
    client = stack.Client(base_url, settings.api_tokens[0])
    accounts = [f"f{i:02d}-{run}" for i in range(ACCOUNTS)]
    for account in accounts:
        client.create_account(account, overdraft_limit=rng.choice([0, 0, 500]))
        client.run(
            "credits", {"operation_id": f"open-{account}", "account_id": account, "amount": 20_000}
        )
    plan = Plan(rng, accounts, run)
    plan.build(OPERATIONS)
    sends = list(plan.operations)
    sends += rng.sample(plan.operations, int(OPERATIONS * REPEAT_SHARE))
    rng.shuffle(sends)
    routes = {body["operation_id"]: rng.random() < AMQP_SHARE for _, body in plan.operations}

    http, amqp = HttpSender(base_url, settings.api_tokens[0]), AmqpSender(settings)
    done = Counter[str]()
    lock = threading.Lock()

    def progress() -> float:
        with lock:
            return done["sent"] / len(sends)

    def send(item: tuple[str, dict[str, Any]]) -> None:
        kind, body = item
        sender = amqp if routes[body["operation_id"]] else http
        assert sender.send(kind, body), f"could not submit {body['operation_id']}"
        with lock:
            done["sent"] += 1

    chaos_log: list[str] = []
    chaos = threading.Thread(
        target=_chaos,
        args=(rng, progress, workers, settings, postgres, rabbit, processes, chaos_log),
        daemon=True,
    )
    started = time.monotonic()
    chaos.start()
    with ThreadPoolExecutor(HTTP_THREADS) as pool:
        list(pool.map(send, sends))
    chaos.join(timeout=300)
    assert len(chaos_log) == 4, chaos_log

    ids = [body["operation_id"] for _, body in plan.operations]
    engine = stack.engine_for(settings)

    def pending() -> int:
        try:
            with engine.connect() as connection:
                terminal = connection.execute(
                    text(
                        "SELECT count(*) FROM operations WHERE operation_id = ANY(:ids) "
                        "AND status <> 'pending'"
                    ),
                    {"ids": ids},
                ).scalar_one()
            return len(ids) - int(terminal)
        except Exception:
            return len(ids)

    stack.wait_until(lambda: pending() == 0, 420, "every accepted operation to be terminal", 0.25)
    elapsed_s = time.monotonic() - started
    metrics["fault run"] = (
        f"{OPERATIONS} operations (+{int(OPERATIONS * REPEAT_SHARE)} repeats, "
        f"{AMQP_SHARE:.0%} over AMQP) with {', '.join(chaos_log)}: all terminal in "
        f"{elapsed_s:.0f}s; HTTP statuses {dict(http.statuses)}; slowest answer "
        f"{http.slowest_s:.1f}s; client timeouts {http.timeouts}"
    )
    # Every request got an answer, and only an allowed one, before the client gave up.
    assert set(http.statuses) <= {200, 202, 503}, http.statuses
    assert http.timeouts == 0, f"{http.timeouts} requests unanswered after {CLIENT_TIMEOUT_S} s"

    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT o.operation_id, o.type, o.status, count(e.entry_id) AS entries "
                "FROM operations o LEFT JOIN entries e ON e.operation_id = o.operation_id "
                "WHERE o.operation_id = ANY(:ids) GROUP BY o.operation_id"
            ),
            {"ids": ids},
        ).all()
        expired = (
            connection.execute(text("SELECT operation_id FROM operations WHERE type = 'expiry'"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert len(rows) == len(ids)
    for row in rows:
        expected = ENTRIES_BY_TYPE[row.type] if row.status == "succeeded" else 0
        assert row.entries == expected, f"{row.operation_id} has {row.entries} entries"

    audit = subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit"],
        env=stack.environment(settings),
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stderr

    events = stack.EventLog(settings)
    seen = events.wait_for(ids + list(expired), timeout_s=180)
    assert set(ids) <= set(seen)
