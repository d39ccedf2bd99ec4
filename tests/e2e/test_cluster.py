"""Nothing lost, nothing doubled while a three-node RabbitMQ cluster loses nodes under load.

A stack of its own (database, prefix, API, two workers, beat) runs on a
throwaway cluster (tests/support/cluster.py). Each process lists the nodes
in another order, so the two workers are connected to different nodes. Mixed
operations go in over HTTP, one by one and in batches, and over the AMQP
intake, while (1) the node holding the leader of `billing.tasks` is killed
with SIGKILL and restarted, (2) another node (that of `billing.responses`'
leader when it is another) is stopped and started again, and
(3) the node holding the leader of `billing.requests` (the intake) is cut off
from the others by a partition (and pauses) and healed. Each fault starts
once no node is quorum critical, as an operator would, and lasts until the
stack has applied a few seconds' worth of the operations accepted since it
began: it is ridden out by failing over, not by waiting. How long the API
answered 503 around each fault, and how long operations waited, are printed
with the results.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
import requests
from kombu import Connection, Producer
from sqlalchemy import text

from billing.adapters.events import Topology
from billing.config import Settings
from tests.support import stack
from tests.support.cluster import RabbitCluster

# At least this many operations: the load goes on until the last fault is
# over and every node runs again, however long the faults take.
OPERATIONS = 1_500
ACCOUNTS = 30
BATCH_SIZE = 25
# Shares of the operations: one by one over HTTP, in HTTP batches, over the intake.
SINGLE_SHARE, BATCH_SHARE, INTAKE_SHARE = 0.4, 0.4, 0.2
UNITS_TOTAL = SINGLE_SHARE + BATCH_SHARE / BATCH_SIZE + INTAKE_SHARE
REPEAT_SHARE = 0.05
# The load is paced: the same rate before, during and after the faults.
OPERATIONS_PER_S = 45
SENDERS = 6
ENTRIES_BY_TYPE = {"credit": 2, "debit": 2, "transfer": 2, "hold": 1, "capture": 3, "release": 1}
# A fault is over once this many operations accepted since it began are
# applied (over 3 s of the load): the API, the workers and the intake have
# failed over and work without the node. A fixed time would only hope so.
APPLIED_DURING_FAULT = 150
FAULT_WAIT_S = 120


@dataclass
class ClusterStack:
    cluster: RabbitCluster
    settings: Settings
    base_url: str
    processes: list[stack.Process] = field(default_factory=list)


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[ClusterStack]:
    cluster = RabbitCluster()
    settings = replace(stack.make_settings(), broker_url=cluster.url_from(0))
    running = ClusterStack(cluster, settings, "")
    try:
        # The cluster takes seconds to form, and the database does not need it.
        with ThreadPoolExecutor(2) as pool:
            for started in [
                pool.submit(cluster.start),
                pool.submit(stack.prepare_database, settings),
            ]:
                started.result()
        # The first worker, on the first node, declares the task queues, so
        # their leaders are there (it is ready before anything else starts);
        # the second prefers the second node, and starts while the API does.
        for i in range(2):
            worker = replace(settings, broker_url=cluster.url_from(i))
            running.processes.append(stack.start_worker(worker, f"cw{i + 1}", wait=i == 0))
        port = stack.free_port()
        api = replace(settings, broker_url=cluster.url_from(2))
        running.processes.append(stack.start_api(api, port))
        stack.wait_ready(running.processes[1])
        running.processes.append(
            stack.start_beat(replace(settings, broker_url=cluster.url_from(1)))
        )
        running.base_url = f"http://127.0.0.1:{port}"
        yield running
    finally:
        stack.discard_all(running.processes)
        cluster.remove()
        stack.drop_database(settings)


@dataclass
class Fault:
    name: str
    node: str
    started: float  # time.time()
    ended: float = 0.0
    # Operations accepted since the fault began and applied before it ended.
    applied: int = 0


class Load:
    """A seeded stream of mixed operations, paced, in units of one operation or a batch."""

    def __init__(self, rng: random.Random, accounts: list[str], run: str) -> None:
        self.rng, self.accounts, self.run = rng, accounts, run
        self.lock = threading.Lock()
        self.count = 0
        self.holds: list[str] = []
        self.singles: list[tuple[str, dict[str, Any]]] = []
        self.ids: list[str] = []
        self.next_at = time.monotonic()

    def _operation(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        kind = rng.choice(["credit", "debit", "transfer", "transfer", "hold", "capture", "release"])
        if kind in ("capture", "release") and not self.holds:
            kind = "hold"
        self.count += 1
        body: dict[str, Any] = {"operation_id": f"{kind[:2]}{self.count}-{self.run}"}
        if kind in ("credit", "debit"):
            body |= {"account_id": rng.choice(self.accounts), "amount": rng.randint(1, 3_000)}
        elif kind == "transfer":
            source, destination = rng.sample(self.accounts, 2)
            body |= {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": rng.randint(1, 3_000),
            }
        elif kind == "hold":
            body |= {"account_id": rng.choice(self.accounts), "amount": rng.randint(1, 2_000)}
            if rng.random() < 0.3:
                body["destination_account_id"] = rng.choice(self.accounts)
            self.holds.append(body["operation_id"])
        else:
            body["hold_id"] = rng.choice(self.holds)
            if kind == "capture" and rng.random() < 0.6:
                body |= {"amount": rng.randint(1, 1_500), "final": rng.random() < 0.5}
        self.ids.append(body["operation_id"])
        return kind, body

    def next_unit(self) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """("single" | "repeat" | "batch" | "intake", operations), when the pace allows it."""
        with self.lock:
            if self.rng.random() < REPEAT_SHARE and self.singles:
                return "repeat", [self.rng.choice(self.singles)]
            # Units drawn so that the operations, not the units, come in the shares.
            draw = self.rng.random() * UNITS_TOTAL
            if draw < SINGLE_SHARE:
                unit = ("single", [self._operation()])
                self.singles.append(unit[1][0])
            elif draw < SINGLE_SHARE + BATCH_SHARE / BATCH_SIZE:
                unit = ("batch", [self._operation() for _ in range(BATCH_SIZE)])
            else:
                unit = ("intake", [self._operation()])
            wait_s = self.next_at - time.monotonic()
            self.next_at = max(self.next_at, time.monotonic()) + len(unit[1]) / OPERATIONS_PER_S
        if wait_s > 0:
            time.sleep(wait_s)
        return unit


def _path(kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind in ("capture", "release"):
        rest = {k: v for k, v in body.items() if k != "hold_id"}
        return f"/v1/holds/{body['hold_id']}/{kind}", rest
    return f"/v1/{kind}s", body


class Senders:
    """Sends units like a careful client: a 503 or a dropped connection is sent again."""

    def __init__(self, settings: Settings, base_url: str, intake_url: str) -> None:
        self.base_url, self.token = base_url, settings.api_tokens[0]
        self.intake_url = intake_url
        self.requests_exchange = Topology(settings).requests
        self.local = threading.local()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, int, float]] = []  # time.time(), status, seconds

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = f"Bearer {self.token}"
        return self.local.session  # type: ignore[no-any-return]

    def post(self, path: str, body: Any) -> requests.Response:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            started = time.time()
            try:
                response = self._session().post(self.base_url + path, json=body, timeout=30)
            except requests.RequestException:
                time.sleep(0.2)
                continue
            with self.lock:
                self.answers.append((started, response.status_code, time.time() - started))
            if response.status_code != 503:
                assert response.status_code < 300, f"{path}: {response.status_code} {response.text}"
                return response
            time.sleep(0.2)
        raise AssertionError(f"{path}: no answer but 503 or errors for 180 s")

    def publish(self, kind: str, body: dict[str, Any]) -> None:
        message = json.dumps({"type": kind, **body})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if not hasattr(self.local, "connection"):
                    self.local.connection = Connection(
                        self.intake_url, transport_options={"confirm_publish": True}
                    )
                Producer(self.local.connection.default_channel).publish(
                    message,
                    exchange=self.requests_exchange,
                    routing_key="operation",
                    content_type="application/json",
                    delivery_mode=2,
                    timeout=15,
                )
                return
            except Exception:
                # Sent again on a new connection: a copy that did arrive is a repeat.
                self.local.__dict__.pop("connection").release()
                time.sleep(0.2)
        raise AssertionError(f"could not publish {body['operation_id']} to the intake")

    def send(self, how: str, operations: list[tuple[str, dict[str, Any]]]) -> None:
        if how == "batch":
            batch = [{"type": kind, **body} for kind, body in operations]
            items = self.post("/v1/operations/batch", {"operations": batch}).json()["items"]
            assert {item["result"] for item in items} <= {"accepted", "repeated"}, items
        elif how == "intake":
            self.publish(*operations[0])
        else:
            self.post(*_path(*operations[0]))


def _faults(
    cluster: RabbitCluster, settings: Settings, faults: list[Fault], applied_since: Any
) -> None:
    """The three faults, one after the other, each once no node is quorum critical."""
    leaders = cluster.leaders()
    killed = cluster.node_named(leaders[settings.amqp_name("billing.tasks")])
    faults.append(Fault("SIGKILL of the task queues' leader node", killed.node, time.time()))
    killed.kill()
    _ride_out(faults[-1], applied_since)
    killed.start()
    cluster.wait_running()
    faults[-1].ended = time.time()

    # The node of billing.responses' leader, unless it was the one killed.
    responses = cluster.leaders().get(settings.amqp_name("billing.responses"), "")
    others = [node for node in cluster.nodes if node is not killed]
    stopped = next((node for node in others if node.node == responses), others[0])
    cluster.wait_not_quorum_critical(stopped)
    faults.append(Fault("stop and start", stopped.node, time.time()))
    stopped.stop()
    _ride_out(faults[-1], applied_since)
    stopped.start()
    cluster.wait_running()
    faults[-1].ended = time.time()

    intake = cluster.node_named(cluster.leaders()[settings.amqp_name("billing.requests")])
    cluster.wait_not_quorum_critical(intake)
    faults.append(Fault("partition of the intake's leader node", intake.node, time.time()))
    cluster.partition(intake)
    # pause_minority: cut off from the others, the node stops serving clients.
    cluster.wait_paused(intake)
    _ride_out(faults[-1], applied_since)
    cluster.heal(intake)
    cluster.wait_running()
    faults[-1].ended = time.time()


def _ride_out(fault: Fault, applied_since: Any) -> None:
    """Wait until the stack has applied APPLIED_DURING_FAULT operations accepted during `fault`."""
    stack.wait_until(
        lambda: applied_since(fault.started) >= APPLIED_DURING_FAULT,
        FAULT_WAIT_S,
        f"{APPLIED_DURING_FAULT} operations applied during the {fault.name}",
        0.25,
    )
    fault.applied = applied_since(fault.started)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _report(faults: list[Fault], answers: list[tuple[float, int, float]], waits: Any) -> str:
    """How long 503s lasted and operations waited around each fault, as lines to print."""
    lines = []
    bounds = [fault.started for fault in faults[1:]] + [float("inf")]
    for fault, next_started in zip(faults, bounds, strict=True):
        window = [a for a in answers if fault.started - 1 <= a[0] < next_started]
        unavailable = [a[0] for a in window if a[1] == 503]
        span = (
            f"503s from +{min(unavailable) - fault.started:.1f} s to "
            f"+{max(unavailable) - fault.started:.1f} s ({len(unavailable)} answers)"
            if unavailable
            else "no 503"
        )
        slowest = max((a[2] for a in window), default=0.0)
        waited = [w for accepted, w in waits if fault.started <= accepted < fault.ended + 5]
        lines.append(
            f"{fault.name} ({fault.node}, {fault.ended - fault.started:.0f} s, "
            f"{fault.applied} operations applied without the node): {span}; "
            f"slowest answer {slowest:.1f} s; operations accepted meanwhile waited "
            f"p50 {_percentile(waited, 0.5):.2f} s, p99 {_percentile(waited, 0.99):.2f} s, "
            f"max {max(waited, default=0.0):.2f} s"
        )
    calm = [w for accepted, w in waits if accepted < faults[0].started]
    lines.append(
        f"before the faults, operations waited p50 {_percentile(calm, 0.5):.2f} s, "
        f"p99 {_percentile(calm, 0.99):.2f} s"
    )
    return "\n".join(lines)


def _replay(rows: list[Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Posted and held of every account, from the succeeded operations in the ledger's order."""
    posted: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    holds: dict[str, dict[str, Any]] = {}
    for row in rows:
        request = row.request
        if row.type == "credit":
            posted[request["account_id"]] += request["amount"]
        elif row.type == "debit":
            posted[request["account_id"]] -= request["amount"]
        elif row.type == "transfer":
            posted[request["source_account_id"]] -= request["amount"]
            posted[request["destination_account_id"]] += request["amount"]
        elif row.type == "hold":
            held[request["account_id"]] += request["amount"]
            holds[row.operation_id] = dict(request, remaining=request["amount"])
        else:
            hold = holds[request["hold_id"]]
            amount = request.get("amount", hold["remaining"]) if row.type == "capture" else 0
            released = 0 if request.get("final", True) is False else hold["remaining"] - amount
            if row.type == "release":
                released = hold["remaining"]
            posted[hold["account_id"]] -= amount
            if hold.get("destination_account_id"):
                posted[hold["destination_account_id"]] += amount
            held[hold["account_id"]] -= amount + released
            hold["remaining"] -= amount + released
    return posted, held


def _history(settings: Settings, account: str, succeeded: list[Any]) -> str:
    """What a balance that the replay does not reach was made of: the account's entries in
    their order, and each succeeded operation on its holds with its place in the ledger."""
    engine = stack.engine_for(settings)
    with engine.connect() as connection:
        entries = connection.execute(
            text(
                "SELECT e.entry_id, e.operation_id, e.bucket, e.amount, o.ledger_seq "
                "FROM entries e JOIN operations o USING (operation_id) "
                "WHERE e.account_id = :a ORDER BY e.entry_id"
            ),
            {"a": account},
        ).all()
    engine.dispose()
    holds = {
        row.operation_id
        for row in succeeded
        if row.type == "hold"
        and account in (row.request["account_id"], row.request.get("destination_account_id"))
    }
    on_holds = [
        f"{row.ledger_seq} {row.operation_id} {row.type} {row.request}"
        for row in succeeded
        if row.request.get("hold_id") in holds or row.operation_id in holds
    ]
    return "\n".join(
        [f"{account}: entries (id, operation, bucket, amount, ledger_seq):"]
        + [" ".join(map(str, entry)) for entry in entries]
        + ["operations on holds, in the ledger's order:"]
        + on_holds
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_operations_survive_a_killed_a_stopped_and_a_partitioned_broker_node(
    cluster_stack: ClusterStack, metrics: dict[str, str]
) -> None:
    cluster, settings = cluster_stack.cluster, cluster_stack.settings
    rng = random.Random(2222)
    run = f"{rng.getrandbits(24):06x}"
    client = stack.Client(cluster_stack.base_url, settings.api_tokens[0])
    accounts = [f"c{i:02d}-{run}" for i in range(ACCOUNTS)]
    for account in accounts:
        client.create_account(account, overdraft_limit=rng.choice([0, 0, 500]))
    opening = [
        {"type": "credit", "operation_id": f"open-{a}", "account_id": a, "amount": 20_000}
        for a in accounts
    ]
    assert client.post("/v1/operations/batch", {"operations": opening}).status_code == 202

    load = Load(rng, accounts, run)
    senders = Senders(settings, cluster_stack.base_url, cluster.url_from(2))
    faults: list[Fault] = []
    faults_done = threading.Event()
    failures: list[BaseException] = []
    engine = stack.engine_for(settings)

    def applied_since(moment: float) -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM operations "
                        "WHERE accepted_at >= to_timestamp(:moment) AND status <> 'pending'"
                    ),
                    {"moment": moment},
                ).scalar_one()
            )

    def inject() -> None:
        try:
            stack.wait_until(lambda: load.count >= OPERATIONS // 10, 120, "some load first")
            _faults(cluster, settings, faults, applied_since)
        except BaseException as error:
            failures.append(error)
        finally:
            faults_done.set()

    def send() -> None:
        try:
            while not (faults_done.is_set() and load.count >= OPERATIONS) and not failures:
                senders.send(*load.next_unit())
        except BaseException as error:
            failures.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=inject)]
    threads += [threading.Thread(target=send) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures
    assert len(faults) == 3 and all(f.ended for f in faults), faults

    ids = [body["operation_id"] for body in opening] + load.ids

    def unfinished() -> int:
        """Operations not yet terminal, counting those not recorded yet: an intake message
        is recorded by a worker some time after its publish was confirmed. (Counting only
        the pending rows, a last operation still on its way was read as pending with the
        others, then applied before the balances were read: 16 more held than the replay.)"""
        with engine.connect() as connection:
            terminal = connection.execute(
                text(
                    "SELECT count(*) FROM operations "
                    "WHERE operation_id = ANY(:ids) AND status <> 'pending'"
                ),
                {"ids": ids},
            ).scalar_one()
        return len(ids) - int(terminal)

    stack.wait_until(lambda: unfinished() == 0, 300, "every operation to be terminal", 0.25)
    elapsed_s = time.monotonic() - started
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT o.operation_id, o.type, o.status, o.request, o.ledger_seq, "
                "o.accepted_at, o.completed_at, count(e.entry_id) AS entries "
                "FROM operations o LEFT JOIN entries e ON e.operation_id = o.operation_id "
                "WHERE o.operation_id = ANY(:ids) GROUP BY o.operation_id ORDER BY o.ledger_seq"
            ),
            {"ids": ids},
        ).all()
        balances = {
            row.account_id: (row.posted, row.held)
            for row in connection.execute(
                text("SELECT account_id, posted, held FROM accounts WHERE NOT is_external")
            )
        }
    engine.dispose()

    statuses = Counter(status for _, status, _ in senders.answers)
    waits = [
        (row.accepted_at.timestamp(), (row.completed_at - row.accepted_at).total_seconds())
        for row in rows
        if isinstance(row.completed_at, datetime)
    ]
    report = _report(faults, senders.answers, waits)
    print(report)
    metrics["cluster run"] = (
        f"{len(load.ids)} operations over HTTP, batches and the intake on a 3-node cluster, "
        f"all terminal in {elapsed_s:.0f} s; HTTP statuses {dict(statuses)}; "
        f"median wait {statistics.median(w for _, w in waits):.2f} s\n" + report
    )

    assert len(load.ids) >= OPERATIONS
    assert all(s < 500 or s == 503 for s in statuses), statuses
    assert len(rows) == len(ids), "an accepted operation is missing"
    for row in rows:
        expected = ENTRIES_BY_TYPE[row.type] if row.status == "succeeded" else 0
        assert row.entries == expected, f"{row.operation_id} has {row.entries} entries"
    # The ledger agrees with itself first; then with the operations replayed in its order.
    audit = subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit"],
        env=stack.environment(settings),
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stderr
    succeeded = [row for row in rows if row.status == "succeeded"]
    posted, held = _replay(succeeded)
    for account in accounts:
        assert balances[account] == (posted[account], held[account]), _history(
            settings, account, succeeded
        )

    seen = stack.EventLog(settings).wait_for(ids, timeout_s=180)
    assert set(ids) <= set(seen)
