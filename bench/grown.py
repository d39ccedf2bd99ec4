"""The grown-ledger scenario of `billing bench-suite --grown-ledger N`: a month of traffic.

Every other scenario runs on whatever ledger it finds, usually a fresh one.
This one first brings the ledger to at least N operations through the batch
endpoint, with nobody reading `billing.responses` (every run reads its
outcomes from the bench's own queue), then runs the uniform and latency
scenarios on it. It prints what decides such figures: whether PostgreSQL's
autovacuum was on, how many events wait unread in `billing.responses` and
unpublished in the outbox, and the broker's memory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import click
import requests
from kombu import Connection
from sqlalchemy import create_engine, text

from bench import config
from bench.config import Settings

# The batch path grows the ledger in runs of at most this many operations:
# each run keeps a record per operation in the bench's memory, and is audited.
grow_run_operations_max = 250_000
grow_batch_size = 1_000
grow_concurrency = 16
grow_outstanding_max = 25_000
grow_drain_timeout_s = 600.0
# The goal: uniform transfers on the grown ledger within 15% of fresh.
grown_share_of_fresh_min = 0.85
broker_command_timeout_s = 30
# How long a read of the state (database, broker, /readyz) may take.
state_read_timeout_s = 10

Measure = Callable[[str, dict[str, Any], float | None, int | None], dict[str, Any]]


def operations_recorded(settings: Settings) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM operations")).scalar_one())
    finally:
        engine.dispose()


def grow(settings: Settings, target: int, measure: Measure) -> dict[str, Any]:
    """Batches of credits, transfers and holds until the ledger holds `target` operations."""
    started = time.monotonic()
    before = found = operations_recorded(settings)
    runs = 0
    while found < target:
        count = min(target - found, grow_run_operations_max)
        setting = {
            "concurrency": grow_concurrency,
            "batch": grow_batch_size,
            "max_outstanding": grow_outstanding_max,
            "events": "own",
        }
        summary = measure(
            f"grown: growing the ledger {found:,} -> {target:,}", setting, None, count
        )
        runs += 1
        if not summary["ok"]:
            raise click.ClickException(f"growing the ledger failed: {summary}")
        found = operations_recorded(settings)
    return {
        "operations_before": before,
        "operations": found,
        "grow_runs": runs,
        "grow_s": round(time.monotonic() - started, 1),
    }


def ledger_state(settings: Settings, url: str) -> dict[str, Any]:
    """Autovacuum, the events waiting (unread and unpublished) and the broker's memory.

    As a client reads them: the database's settings and size, the depth of
    `billing.responses` by a passive declare, the outbox backlog from `/readyz`.
    """
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            autovacuum = str(connection.execute(text("SHOW autovacuum")).scalar_one())
            size = str(
                connection.execute(
                    text("SELECT pg_size_pretty(pg_database_size(current_database()))")
                ).scalar_one()
            )
    finally:
        engine.dispose()
    events = waiting_events(url)
    return {
        "autovacuum": autovacuum,
        "database_size": size,
        "responses_depth": responses_depth(settings),
        "outbox_backlog": events.get("outbox_backlog", "unknown"),
        "oldest_unpublished_age_s": events.get("oldest_unpublished_age_s", "unknown"),
        "broker_memory": broker_memory(),
    }


def responses_depth(settings: Settings) -> int | str:
    """The events unread in `billing.responses` (a passive declare: no management plugin)."""
    try:
        with Connection(settings.broker_url, connect_timeout=state_read_timeout_s) as connection:
            declared = connection.default_channel.queue_declare(
                settings.amqp_name(config.RESPONSES_QUEUE), passive=True
            )
            return int(declared.message_count)
    except Exception as error:
        return f"unknown ({error})"


def waiting_events(url: str) -> dict[str, Any]:
    """The `events` part of the API's `/readyz`: the outbox backlog and its oldest event's age."""
    try:
        events = requests.get(f"{url}/readyz", timeout=state_read_timeout_s).json().get("events")
    except Exception:
        return {}
    return events if isinstance(events, dict) else {}


def broker_memory() -> str:
    """The broker node's memory by use, as `rabbitmq-diagnostics memory_breakdown` tells it.

    The CLI needs no management plugin, but it must run where it can reach
    the node (its host, with the node's Erlang cookie); elsewhere this says why not.
    """
    command = shutil.which("rabbitmq-diagnostics")
    if command is None:
        return "unknown: rabbitmq-diagnostics is not installed here"
    try:
        answer = subprocess.run(
            [command, "-q", "memory_breakdown", "--unit", "mb"],
            capture_output=True,
            text=True,
            timeout=broker_command_timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown: {error}"
    if answer.returncode != 0:
        return f"unknown: {(answer.stderr or answer.stdout).strip()[:200]}"
    lines = [line.strip() for line in answer.stdout.splitlines() if line.strip()]
    total = 0.0
    for line in lines:
        try:
            total += float(line.split(":")[1].split()[0])
        except (IndexError, ValueError):
            continue
    return f"{total:,.0f} MB in all; " + "; ".join(lines[:4])


def run_grown(
    settings: Settings,
    url: str,
    target: int,
    duration_s: float,
    measure: Measure,
    fresh_uniform: dict[str, Any] | None,
    scenarios: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Grow the ledger, then the uniform and latency scenarios on it; the figures and state."""
    click.echo(f"grown ledger: before growing: {ledger_state(settings, url)}", err=True)
    growth = grow(settings, target, measure)
    state = ledger_state(settings, url)
    click.echo(f"grown ledger: {growth}; {state}", err=True)
    runs = []
    for name in ("uniform", "latency"):
        setting = {**scenarios[name], "events": "own"}
        summary = measure(f"grown-{name}: {target:,} operations", setting, duration_s, None)
        summary["scenario"] = f"grown-{name}"
        runs.append(summary)
    uniform = runs[0]
    if fresh_uniform is not None:
        uniform["share_of_fresh"] = round(
            uniform["completed_per_s"] / max(fresh_uniform["completed_per_s"], 1e-9), 3
        )
        uniform["target_met"] = uniform["share_of_fresh"] >= grown_share_of_fresh_min
    return {
        **growth,
        "state_after_growing": state,
        "state_after": ledger_state(settings, url),
        "runs": runs,
    }


def render_grown(grown: dict[str, Any]) -> str:
    """Lines for the suite's report: the growth, the state it left, each run's figures."""
    state, after = grown["state_after_growing"], grown["state_after"]
    lines = [
        f"grown ledger: {grown['operations']:,} operations "
        f"({grown['operations'] - grown['operations_before']:,} added through the batch endpoint "
        f"in {grown['grow_s']:,.0f} s, {grown['grow_runs']} runs); "
        f"autovacuum {state['autovacuum']} (the suite vacuums the ledger before each run); "
        f"database {state['database_size']}",
        f"events unread in billing.responses: {after['responses_depth']}; "
        f"unpublished in the outbox (as /readyz counts them, up to 100,000): "
        f"{after['outbox_backlog']} "
        f"(oldest {after['oldest_unpublished_age_s']} s)",
        f"broker memory: {after['broker_memory']}",
    ]
    for run in grown["runs"]:
        latency = run["latency_ms"]
        share = run.get("share_of_fresh")
        lines.append(
            f"{run['scenario']}: completed/s {run['completed_per_s']:,.0f}, "
            f"p50/p95/p99 ms {latency['p50']}/{latency['p95']}/{latency['p99']}, "
            f"audit {'passed' if run['audit']['passed'] else 'FAILED'}"
            + (
                f", {share:.0%} of fresh uniform (goal >= {grown_share_of_fresh_min:.0%})"
                if share is not None
                else ""
            )
        )
    return "\n".join(lines)
