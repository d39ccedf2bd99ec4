"""`billing bench` end to end: a short run against the session's stack, read back as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from kombu import Connection, Producer

from bench.grown import operations_recorded
from bench.report import render
from bench.suite import render_table
from billing.adapters.events import Topology
from billing.config import Settings
from tests.conftest import Workers
from tests.support import stack

OPERATIONS = 300


def billing(
    settings: Settings, api_url: str, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run `billing COMMAND` against the session's API with its token, as JSON."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "billing.cli",
            command,
            "--url",
            api_url,
            "--token",
            settings.api_tokens[0],
            *args,
            "--json",
        ],
        env=stack.environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bench_sees_every_operation_complete_and_the_audit_pass(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    finished = billing(
        settings,
        api_url,
        "bench",
        "--count",
        str(OPERATIONS),
        "--accounts",
        "50",
        "--concurrency",
        "8",
        "--seed",
        "6",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)

    assert report["sent"] == report["accepted"] == report["completed"] == OPERATIONS
    assert report["events"] == "own"
    assert report["succeeded"] == OPERATIONS, report["failures"]
    assert report["pending"] == 0
    assert report["rejected"] == {} and report["http_errors"] == {}
    assert report["http_requests"] == OPERATIONS
    assert report["audit"] == {"passed": True, "violations": []}
    assert report["ok"] is True
    latency = report["latency_ms"]
    assert set(latency) == {"p50", "p95", "p99", "max"}
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["accepted_per_s"] > 0 and report["completed_per_s"] > 0
    assert report["cpu"]["user_s"] + report["cpu"]["system_s"] > 0
    # The service runs on this machine: its API and workers show in the CPU by component.
    machine_cpu = report["machine_cpu"]
    assert 0 < machine_cpu["cores_busy"] <= machine_cpu["cores"]
    by_component = machine_cpu["ms_per_completed"]
    assert by_component["api"] > 0 and by_component["worker"] > 0 and by_component["bench"] > 0
    assert "completed/s" in finished.stderr  # the progress lines
    # What a person reads, from the same figures.
    lines = render(report).splitlines()
    assert any(line.startswith("events       read from the bench's own queue;") for line in lines)
    assert any(line.startswith("machine CPU  ") and "cores busy" in line for line in lines)


def test_bench_suite_runs_scenarios_and_judges_each_against_its_goal(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    finished = billing(
        settings,
        api_url,
        "bench-suite",
        "--settle",
        "0",
        "--only",
        "latency",
        "--only",
        "batch",
        "--duration",
        "1",
        "--accounts",
        "20",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)

    assert report["machine"]["cpus"] >= 1 and report["duration_s"] == 1
    # As a client of the service would, unless told otherwise.
    assert report["events"] == "responses"
    latency, batch = report["runs"]
    assert latency["scenario"] == "latency" and latency["rate"] == 500
    assert batch["scenario"] == "batch" and batch["batch"] == 500
    for run in (latency, batch):
        assert run["events"] == "responses"
        assert run["ok"] is True and run["pending"] == 0 and run["audit"]["passed"] is True
        assert run["completed"] == run["accepted"] > 0
    assert latency["target_met"] is (latency["latency_ms"]["p99"] < 250)
    assert batch["target_met"] is (batch["completed_per_s"] >= 5_000)
    # The table a person reads: the whole machine's CPU per operation in each row.
    rows = render_table(report).splitlines()
    assert "| CPU ms/op |" in rows[2]
    for row, run in zip(rows[4:], (latency, batch), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == run["scenario"]
        assert float(cells[6]) == round(run["machine_cpu"]["ms_per_completed"]["machine"], 3) > 0
    # Between the runs, not before the first: the ledger is vacuumed.
    stderr = finished.stderr
    assert stderr.index("== latency") < stderr.index("vacuuming") < stderr.index("== batch")


def test_bench_with_clients_runs_a_closed_loop_and_times_each_post_and_its_event(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    finished = billing(
        settings, api_url, "bench", "--clients", "2", "--count", "60", "--accounts", "20"
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)

    assert report["clients"] == report["concurrency"] == 2 and report["rate"] is None
    assert report["http_requests"] == report["accepted"] == report["completed"] == 60
    post, post_to_event, after_answer = (
        report["post_ms"],
        report["post_to_event_ms"],
        report["latency_ms"],
    )
    for quantiles in (post, post_to_event, after_answer):
        assert 0 <= quantiles["p50"] <= quantiles["p95"] <= quantiles["p99"] <= quantiles["max"]
    # Each operation's event comes after its POST was answered, which comes after it left.
    for name in ("p50", "p99", "max"):
        assert post_to_event[name] >= post[name]
        assert post_to_event[name] >= after_answer[name]
    lines = render(report).splitlines()
    assert "closed loop of 2 clients" in lines[0]
    assert any(line.startswith("latency      POST answered: p50 ") for line in lines)


def test_bench_suite_sweeps_closed_loops_of_more_and_more_clients(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    finished = billing(
        settings,
        api_url,
        "bench-suite",
        "--settle",
        "0",
        "--only",
        "sweep",
        "--clients",
        "1",
        "--clients",
        "3",
        "--sweep-duration",
        "1",
        "--accounts",
        "20",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)

    assert report["runs"] == [] and report["sweep_duration_s"] == 1
    one, three = report["sweep"]
    assert (one["clients"], three["clients"]) == (1, 3)
    for step in (one, three):
        assert step["ok"] is True and step["pending"] == 0 and step["completed"] > 0
        assert step["accounts"] == 20 and step["rate"] is None and step["batch"] == 0
    assert one["target"].startswith("POST p50 <= 3 ms")
    assert isinstance(one["target_met"], bool)
    assert three["target"] is None and three["target_met"] is None
    rows = render_table(report).splitlines()
    assert rows[2].startswith("| clients | accepted/s | completed/s | POST p50 ms")
    assert [row.split("|")[1].strip() for row in rows[4:6]] == ["1", "3"]
    stderr = finished.stderr
    assert stderr.index("== sweep: 1 clients") < stderr.index("vacuuming")
    assert stderr.index("vacuuming") < stderr.index("== sweep: 3 clients")


def test_bench_with_an_outstanding_cap_still_sees_every_batch_operation_complete(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    finished = billing(
        settings,
        api_url,
        "bench",
        "--count",
        "400",
        "--batch",
        "50",
        "--max-outstanding",
        "100",
        "--accounts",
        "20",
        "--concurrency",
        "4",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)
    assert report["max_outstanding"] == 100
    assert report["accepted"] == report["completed"] == 400 and report["pending"] == 0
    assert report["http_requests"] == 8


def test_bench_reading_billing_responses_takes_every_event_there_and_counts_the_others(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    topology = Topology(settings)
    with Connection(settings.broker_url) as connection:
        topology.declare_responses(connection)
        Producer(connection.default_channel).publish(
            {"operation_id": "not-of-the-bench"},
            exchange=topology.events,
            routing_key="operation.credit.succeeded",
            message_id="not-of-the-bench",
            delivery_mode=2,
        )

    finished = billing(
        settings, api_url, "bench", "--count", "120", "--accounts", "20", "--events", "responses"
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)
    assert report["events"] == "responses"
    assert report["accepted"] == report["completed"] == 120 and report["pending"] == 0
    assert any(
        line.startswith("events       read from billing.responses;")
        for line in render(report).splitlines()
    )
    # The event already waiting there was taken, and counted, not matched.
    assert report["other_events"] >= 1
    with Connection(settings.broker_url) as connection:
        waiting = connection.default_channel.queue_declare(topology.responses.name, passive=True)
    assert waiting.message_count == 0


def test_bench_refuses_to_read_billing_responses_while_another_client_consumes_there(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    topology = Topology(settings)
    with Connection(settings.broker_url) as connection:
        topology.declare_responses(connection)
        channel = connection.channel()
        channel.basic_consume(topology.responses.name, callback=lambda message: None)

        finished = billing(
            settings, api_url, "bench", "--count", "10", "--accounts", "5", "--events", "responses"
        )

    assert finished.returncode == 1
    assert "billing.responses has another consumer" in finished.stderr, finished.stderr
    assert "--events own" in finished.stderr
    assert finished.stdout == ""


def test_bench_suite_grows_the_ledger_then_runs_on_it_with_billing_responses_unread(
    settings: Settings, api_url: str, client: stack.Client, workers: Workers
) -> None:
    target = operations_recorded(settings) + 2_000
    finished = billing(
        settings,
        api_url,
        "bench-suite",
        "--settle",
        "0",
        "--only",
        "grown",
        "--duration",
        "1",
        "--accounts",
        "20",
        "--grown-ledger",
        str(target),
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(finished.stdout)

    grown = report["grown_ledger"]
    assert grown["operations"] >= target and grown["grow_runs"] == 1
    state = grown["state_after"]
    assert state["autovacuum"] in ("on", "off")
    assert isinstance(state["responses_depth"], int) and state["outbox_backlog"] >= 0
    assert state["broker_memory"]
    uniform, latency = grown["runs"]
    assert (uniform["scenario"], latency["scenario"]) == ("grown-uniform", "grown-latency")
    for run in grown["runs"]:
        # Nobody reads billing.responses: each run reads its outcomes from its own queue.
        assert run["events"] == "own"
        assert run["ok"] is True and run["pending"] == 0 and run["audit"]["passed"] is True
    assert report["runs"] == [] and "share_of_fresh" not in uniform  # no fresh run before
    assert "grown ledger:" in render_table(report)
