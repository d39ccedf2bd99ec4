"""The bench's report: POST latency, POST to event, and the latency sweep's table."""

from __future__ import annotations

from typing import Any

from bench.broker import Outcome
from bench.client import Tally
from bench.report import render, summarize
from bench.runner import Record
from bench.sweep import judge, render_sweep_table

PASSED = {"passed": True, "violations": []}
SETTING = {
    "run_id": "bench-1",
    "url": "http://127.0.0.1:8000",
    "batch": 0,
    "mix": {"transfer": 100},
    "accounts": 1000,
    "hot": 0,
    "concurrency": 1,
    "clients": 1,
    "rate": None,
    "amqp_share": 0.0,
    "max_outstanding": 0,
    "events": "responses",
}


def one_client_record() -> Record:
    """Ten operations one after another: POST n left at n, answered 2 ms later, event 5 ms later."""
    tally = Tally()
    outcomes = {}
    for n in range(10):
        operation_id = f"bench-1-t{n}"
        sent_at = float(n)
        answer_s = 0.002 if n < 9 else 0.009
        tally.sent += 1
        tally.requests += 1
        tally.post_s.append(answer_s)
        tally.accept(operation_id, sent_at + answer_s, sent_at)
        outcomes[operation_id] = Outcome(sent_at + answer_s + 0.005, None)
    return Record(tally, outcomes, load_started_at=0.0, load_ended_at=10.0, drain_ended_at=10.0)


def test_post_latency_is_measured_from_each_post_and_post_to_event_from_when_it_left() -> None:
    summary = summarize(one_client_record(), SETTING, PASSED)

    assert summary["post_ms"] == {"p50": 2.0, "p95": 9.0, "p99": 9.0, "max": 9.0}
    assert summary["post_to_event_ms"] == {"p50": 7.0, "p95": 14.0, "p99": 14.0, "max": 14.0}
    # From the answer to the event, as before.
    assert summary["latency_ms"] == {"p50": 5.0, "p95": 5.0, "p99": 5.0, "max": 5.0}
    lines = render(summary).splitlines()
    assert "closed loop of 1 clients" in lines[0]
    assert any(line.startswith("latency      POST answered: p50 2.0 ms") for line in lines)
    assert any("POST to event: p50 7.0 ms" in line for line in lines)


def step(clients: int, post: tuple[float, float], event: tuple[float, float], rate: float) -> Any:
    return {
        "clients": clients,
        "accepted_per_s": rate,
        "completed_per_s": rate,
        "post_ms": {"p50": post[0], "p95": post[1], "p99": post[1], "max": post[1]},
        "post_to_event_ms": {"p50": event[0], "p95": event[1], "p99": event[1], "max": event[1]},
        "failures": {},
        "pending": 0,
        "audit": PASSED,
    }


def test_the_sweep_judges_one_client_by_latency_and_sixteen_by_rate_and_tabulates_every_step() -> (
    None
):
    steps = [
        step(1, (1.2, 6.0), (7.5, 20.0), 700),
        step(4, (2.0, 9.0), (9.0, 30.0), 1400),
        step(16, (8.0, 30.0), (20.0, 60.0), 990),
    ]
    for each in steps:
        judge(each)
    assert [s["target_met"] for s in steps] == [True, None, False]
    assert steps[2]["target"] == "completed/s >= 1,000"

    steps[0]["post_to_event_ms"]["p99"] = 25.1
    judge(steps[0])
    assert steps[0]["target_met"] is False

    rows = render_sweep_table(steps).splitlines()
    assert rows[0].startswith("| clients | accepted/s | completed/s | POST p50 ms | POST p99 ms")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]
    assert [row[0] for row in cells] == ["1", "4", "16"]
    assert cells[0][1:7] == ["700", "700", "1.2", "6.0", "7.5", "25.1"]
    assert cells[1][-2:] == ["", ""]
    assert cells[2][-2:] == ["completed/s >= 1,000", "no"]
