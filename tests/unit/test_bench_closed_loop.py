"""The bench's closed loop: a fixed number of clients, each waiting for its answer, timed."""

from __future__ import annotations

import asyncio
from typing import Any

from click.testing import CliRunner

from bench.client import Tally
from bench.command import bench
from bench.runner import Load, Plan
from bench.workload import Workload


class SlowApi:
    """Answers every POST with 202 after a few turns of the loop; counts what was in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.in_flight_max = 0
        self.paths: list[str] = []

    async def post(self, path: str, body: Any) -> tuple[str, bytes]:
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        self.paths.append(path)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return "202", b"{}"


def test_each_client_sends_its_next_request_only_once_its_previous_post_was_answered() -> None:
    api = SlowApi()
    plan = Plan("http://127.0.0.1:1", "token", 3, None, 30, None, 0, 1.0)
    workload = Workload("run", {"transfer": 1}, 10, seed=1)
    tally = Tally()
    load = Load(api, None, plan, workload, tally, lambda: 0)  # type: ignore[arg-type]

    asyncio.run(load.drive())

    assert api.in_flight_max == 3
    assert len(api.paths) == tally.requests == len(tally.accepted_at) == 30
    # Every POST is timed, and every accepted operation knows when its POST left.
    assert len(tally.post_s) == 30 and all(seconds >= 0 for seconds in tally.post_s)
    assert tally.sent_at.keys() == tally.accepted_at.keys()
    assert all(tally.sent_at[i] <= tally.accepted_at[i] for i in tally.accepted_at)


def test_clients_is_a_closed_loop_and_refuses_a_rate_or_a_concurrency() -> None:
    for extra in (["--rate", "100"], ["--concurrency", "8"]):
        result = CliRunner().invoke(bench, ["--token", "t", "--clients", "4", *extra])
        assert result.exit_code == 2, result.output
        assert f"--clients is a closed loop: it takes no {extra[0]}" in result.output
