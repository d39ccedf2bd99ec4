"""The latency sweep of `billing bench-suite`: closed loops of more and more clients.

A service can be fast for a client sending hundreds of requests at once and
slow for one sending a request at a time; the sweep shows both ends and the
way between them. Each step is a closed loop of a fixed number of clients
(each sends its next transfer once its previous POST is answered) among a
thousand accounts, and reports how long a POST took to be answered, how long
from the POST to the operation's event, and how many transfers completed per
second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

sweep_clients_default = (1, 4, 16, 64, 256)
sweep_duration_default_s = 20.0
# Single transfers among this many accounts at most (fewer when the suite is
# given fewer): what the sweep of issue 20 measured.
sweep_accounts_max = 1_000

# The goals of issue 20, on a 2-core machine running everything: a lone
# client is answered in a few milliseconds and sees its event soon after;
# 16 clients already complete a thousand transfers a second.
quiet_clients = 1
quiet_post_p50_ms_max = 3
quiet_post_p99_ms_max = 10
quiet_event_p50_ms_max = 10
quiet_event_p99_ms_max = 25
busy_clients = 16
busy_completed_per_s_min = 1_000


def _at_most(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def _quiet_met(summary: dict[str, Any]) -> bool:
    post, event = summary["post_ms"], summary["post_to_event_ms"]
    return (
        _at_most(post["p50"], quiet_post_p50_ms_max)
        and _at_most(post["p99"], quiet_post_p99_ms_max)
        and _at_most(event["p50"], quiet_event_p50_ms_max)
        and _at_most(event["p99"], quiet_event_p99_ms_max)
    )


def _busy_met(summary: dict[str, Any]) -> bool:
    return bool(summary["completed_per_s"] >= busy_completed_per_s_min)


GOALS: dict[int, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    quiet_clients: (
        f"POST p50 <= {quiet_post_p50_ms_max} ms, p99 <= {quiet_post_p99_ms_max} ms; "
        f"to event p50 <= {quiet_event_p50_ms_max} ms, p99 <= {quiet_event_p99_ms_max} ms",
        _quiet_met,
    ),
    busy_clients: (f"completed/s >= {busy_completed_per_s_min:,}", _busy_met),
}


def step_setting(clients: int, accounts: int) -> dict[str, Any]:
    """What a step changes in the suite's setting: a closed loop of `clients`."""
    return {
        "clients": clients,
        "concurrency": clients,
        "accounts": min(accounts, sweep_accounts_max),
    }


def judge(summary: dict[str, Any]) -> None:
    """Mark a step's summary with its goal and whether it was met (None: no goal)."""
    goal = GOALS.get(summary["clients"])
    summary["target"] = goal[0] if goal else None
    summary["target_met"] = goal[1](summary) if goal else None


def render_sweep_table(steps: list[dict[str, Any]]) -> str:
    """A Markdown table of the sweep, one row per number of clients."""
    lines = [
        "| clients | accepted/s | completed/s | POST p50 ms | POST p99 ms | POST to event p50 ms "
        "| POST to event p99 ms | failures | pending | audit | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        post, event = step["post_ms"], step["post_to_event_ms"]
        failures = ", ".join(f"{c} {n}" for c, n in step["failures"].items()) or "none"
        met = {True: "yes", False: "no", None: ""}[step["target_met"]]
        lines.append(
            f"| {step['clients']} | {step['accepted_per_s']:,.0f} "
            f"| {step['completed_per_s']:,.0f} | {_ms(post['p50'])} | {_ms(post['p99'])} "
            f"| {_ms(event['p50'])} | {_ms(event['p99'])} | {failures} | {step['pending']} "
            f"| {'passed' if step['audit']['passed'] else 'FAILED'} "
            f"| {step['target'] or ''} | {met} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"
