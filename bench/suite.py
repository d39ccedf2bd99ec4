"""`billing bench-suite`: the benchmark run of docs/performance.md, every scenario against its goal.

One command runs the scenarios the performance goals are stated in (uniform
transfers, latency at half the goal rate, two hot accounts, the batch
endpoint, reads beside writes), each with its own accounts, one after another against a running
service, then prints one table: the figures, the target and whether the run
met it, and the machine it ran on.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from bench import grown, machine, sweep
from bench.command import api_token, events_option, run_once
from bench.config import Settings
from bench.workload import EVENT_QUEUES, MIX_DEFAULT, parse_mix

# The goals of the performance issue, on a 2-core machine running everything.
uniform_completed_per_s_min = 1_000
latency_rate_per_s = uniform_completed_per_s_min / 2
latency_p99_ms_max = 250
hot_share_of_uniform_min = 0.7
batch_completed_per_s_min = 5_000
# Reads beside writes at the latency scenario's rate: each kind's p99 (bench.reads).
reads_readers = 8
read_p99_ms_max = 250

# `--only sweep` runs the latency sweep (`bench.sweep`) alone; `--only
# grown` none but the grown-ledger scenario (`bench.grown`).
SWEEP = "sweep"
GROWN = "grown"
suite_duration_default_s = 60.0
suite_drain_timeout_s = 120.0
settle_between_runs_s = 5.0
single_concurrency = 512
batch_size = 500
batch_concurrency = 16
# The batch endpoint accepts several times faster than the workers apply: a
# cap on what is in flight makes the run measure the rate the workers sustain
# rather than a backlog that drains for minutes afterwards.
batch_outstanding_max = 25_000


Verdict = Callable[[dict[str, Any], dict[str, dict[str, Any]]], bool]


@dataclass(frozen=True)
class Scenario:
    name: str
    setting: dict[str, Any]
    target: str
    met: Verdict


def _completed_at_least(rate_per_s: float) -> Verdict:
    return lambda summary, _: summary["completed_per_s"] >= rate_per_s


def _p99_below(ms: float) -> Verdict:
    return lambda summary, _: (summary["latency_ms"]["p99"] or float("inf")) < ms


def reads_p99_below(ms: float) -> Verdict:
    """Every read kind measured, each with its p99 under `ms`, and no read refused."""

    def met(summary: dict[str, Any], _: dict[str, dict[str, Any]]) -> bool:
        reads = summary.get("reads") or {}
        return (
            bool(reads)
            and not summary.get("read_errors")
            and all((figures["p99"] or float("inf")) < ms for figures in reads.values())
        )

    return met


def _share_of_uniform(share: float) -> Verdict:
    def met(summary: dict[str, Any], earlier: dict[str, dict[str, Any]]) -> bool:
        uniform = earlier.get("uniform")
        if uniform is None:
            return False
        return (
            summary["completed_per_s"] >= share * uniform["completed_per_s"]
            and not (summary["failures"])
        )

    return met


SCENARIOS = (
    Scenario(
        "uniform",
        {"concurrency": single_concurrency},
        f"completed/s >= {uniform_completed_per_s_min:,}",
        _completed_at_least(uniform_completed_per_s_min),
    ),
    Scenario(
        "latency",
        {"concurrency": single_concurrency, "rate": latency_rate_per_s},
        f"p99 < {latency_p99_ms_max} ms at {latency_rate_per_s:g}/s",
        _p99_below(latency_p99_ms_max),
    ),
    Scenario(
        "hot",
        {"concurrency": single_concurrency, "hot": 2},
        f"completed/s >= {hot_share_of_uniform_min:.0%} of uniform, no failures",
        _share_of_uniform(hot_share_of_uniform_min),
    ),
    Scenario(
        "batch",
        {
            "concurrency": batch_concurrency,
            "batch": batch_size,
            "max_outstanding": batch_outstanding_max,
        },
        f"completed/s >= {batch_completed_per_s_min:,}",
        _completed_at_least(batch_completed_per_s_min),
    ),
    Scenario(
        "reads",
        {"concurrency": single_concurrency, "rate": latency_rate_per_s, "readers": reads_readers},
        f"read p99 < {read_p99_ms_max} ms, each kind, {reads_readers} readers beside "
        f"{latency_rate_per_s:g}/s",
        reads_p99_below(read_p99_ms_max),
    ),
)


@click.command("bench-suite")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="the API")
@click.option("--token", help="API token [default: the first of BILLING_API_TOKENS]")
@click.option("--accounts", default=10_000, show_default=True, type=click.IntRange(min=3))
@click.option(
    "--duration",
    default=suite_duration_default_s,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds of load of each scenario",
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice([SWEEP] + [s.name for s in SCENARIOS] + [GROWN]),
    help="run only this scenario (repeatable) [default: all, in this order]; "
    f"`{GROWN}` alone runs only the --grown-ledger one",
)
@click.option(
    "--clients",
    "sweep_clients",
    multiple=True,
    type=click.IntRange(min=1),
    help="the steps of the sweep, in clients (repeatable) "
    f"[default: {', '.join(map(str, sweep.sweep_clients_default))}]",
)
@click.option(
    "--sweep-duration",
    default=sweep.sweep_duration_default_s,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds of load of each step of the sweep",
)
@events_option(default="responses")
@click.option(
    "--grown-ledger",
    "grown_operations",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="after the other scenarios, grow the ledger to this many operations through the "
    "batch endpoint with nobody reading billing.responses, then run uniform and latency "
    "on it (bench.grown; 2000000 takes most of an hour) [default: off]",
)
@click.option(
    "--settle",
    "settle_s",
    default=settle_between_runs_s,
    show_default=True,
    type=click.FloatRange(min=0),
    help="seconds of rest between runs, after the vacuum, so one run's tail does not weigh on "
    "the next",
)
@click.option("--json", "as_json", is_flag=True, help="print every figure as one JSON object")
def bench_suite(
    url: str,
    token: str | None,
    accounts: int,
    duration: float,
    only: tuple[str, ...],
    sweep_clients: tuple[int, ...],
    sweep_duration: float,
    events: str,
    grown_operations: int,
    settle_s: float,
    as_json: bool,
) -> None:
    """Run the benchmark scenarios one after another and check each against its goal.

    First the sweep: closed loops of 1, 4, 16, 64 and 256 clients sending
    single transfers among 1,000 accounts, each with its POST latency, its
    latency from POST to event and its completed/s. Then uniform transfers
    among --accounts accounts (concurrency 512), the same at half the goal
    rate for latency, every transfer touching one of 2 hot accounts, and
    batches of 500 through POST /v1/operations/batch, then the latency rate
    again with 8 readers searching the ledger beside it. Outcomes are read from
    billing.responses, as the service's client would (--events). Each run
    shows its progress on stderr, drains, and is audited; the ledger's
    tables are vacuumed between runs, as autovacuum would. Exits 1 when any
    run failed its audit or left operations pending; a missed goal shows in
    the table, not in the exit status.
    """
    settings = Settings.from_env()
    token = api_token(settings, token)
    base = {
        "url": url,
        "batch": 0,
        "mix": parse_mix(MIX_DEFAULT),
        "accounts": accounts,
        "hot": 0,
        "clients": None,
        "rate": None,
        "amqp_share": 0.0,
        "max_outstanding": 0,
        "events": events,
        "readers": 0,
    }
    runs = 0

    def measure(
        title: str, setting: dict[str, Any], seconds: float | None, count: int | None = None
    ) -> dict[str, Any]:
        nonlocal runs
        if runs:
            vacuum_ledger(settings.database_url)
            time.sleep(settle_s)
        runs += 1
        click.echo(f"== {title}", err=True)
        drain_timeout_s = grown.grow_drain_timeout_s if count else suite_drain_timeout_s
        return run_once(settings, token, {**base, **setting}, seconds, count, drain_timeout_s, None)

    steps = []
    if not only or SWEEP in only:
        for clients in sweep_clients or sweep.sweep_clients_default:
            step = measure(
                f"{SWEEP}: {clients} clients", sweep.step_setting(clients, accounts), sweep_duration
            )
            sweep.judge(step)
            steps.append(step)
    results: dict[str, dict[str, Any]] = {}
    for scenario in (s for s in SCENARIOS if not only or s.name in only):
        summary = measure(f"{scenario.name}: {scenario.target}", scenario.setting, duration)
        summary["scenario"] = scenario.name
        summary["target"] = scenario.target
        summary["target_met"] = scenario.met(summary, results)
        results[scenario.name] = summary
    grown_ledger = None
    if grown_operations:
        settings_of = {s.name: s.setting for s in SCENARIOS}
        grown_ledger = grown.run_grown(
            settings, url, grown_operations, duration, measure, results.get("uniform"), settings_of
        )
    report = {
        "grown_ledger": grown_ledger,
        "machine": machine.describe(),
        "duration_s": duration,
        "sweep_duration_s": sweep_duration,
        "events": events,
        "sweep": steps,
        "runs": list(results.values()),
    }
    click.echo(json.dumps(report, default=str) if as_json else render_table(report))
    grown_runs = grown_ledger["runs"] if grown_ledger else []
    sys.exit(0 if all(r["ok"] for r in steps + list(results.values()) + grown_runs) else 1)


# What autovacuum would have cleaned by the next run on a database left to
# PostgreSQL's defaults: every operation of a run leaves a dead entry in the
# index of pending operations, which each later transaction walks past.
_LEDGER_TABLES = ("operations", "entries", "accounts", "outbox", "outbox_pending")
# As the service's own engines set them (billing/limits.py), so a VACUUM waits as long.
lock_wait_ms = 2_000
statement_timeout_ms = 10_000


def vacuum_ledger(database_url: str) -> None:
    """VACUUM (ANALYZE) the ledger's tables, so no run pays for the dead rows of the one before.

    A database whose autovacuum is off (as on some CI machines) would
    otherwise make every scenario slower than the one before it.
    """
    from sqlalchemy import create_engine, text

    click.echo(f"vacuuming {', '.join(_LEDGER_TABLES)}", err=True)
    # A VACUUM stuck behind a lock fails the suite rather than holding it.
    options = f"-c lock_timeout={lock_wait_ms}ms -c statement_timeout={statement_timeout_ms}ms"
    engine = create_engine(database_url, pool_size=1, connect_args={"options": options})
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f"VACUUM (ANALYZE) {', '.join(_LEDGER_TABLES)}"))
    finally:
        engine.dispose()


def render_table(report: dict[str, Any]) -> str:
    """Markdown tables of the sweep and of the runs, under a line naming the machine."""
    host = report["machine"]
    lines = [
        f"machine: {host['cpus']} CPUs ({host['cpu_model']}), {host['memory_gib']} GiB, "
        f"{host['system']}, Python {host['python']}; {report['duration_s']:g} s of load per run, "
        f"{report['sweep_duration_s']:g} s per step of the sweep; "
        f"events read from {EVENT_QUEUES[report['events']]}",
        "",
    ]
    if report["sweep"]:
        lines += [sweep.render_sweep_table(report["sweep"]), ""]
    if report.get("grown_ledger"):
        lines += [grown.render_grown(report["grown_ledger"]), ""]
    if not report["runs"]:
        return "\n".join(lines).rstrip()
    lines += [
        "| scenario | accepted/s | completed/s | p50 ms | p95 ms | p99 ms | CPU ms/op "
        "| failures | pending | audit | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        latency = run["latency_ms"]
        failures = ", ".join(f"{c} {n}" for c, n in run["failures"].items()) or "none"
        lines.append(
            f"| {run['scenario']} | {run['accepted_per_s']:,.0f} | {run['completed_per_s']:,.0f} "
            f"| {_ms(latency['p50'])} | {_ms(latency['p95'])} | {_ms(latency['p99'])} "
            f"| {_machine_ms(run.get('machine_cpu'))} | {failures} | {run['pending']} "
            f"| {'passed' if run['audit']['passed'] else 'FAILED'} "
            f"| {run['target']} | {'yes' if run['target_met'] else 'no'} |"
        )
    read_runs = [run for run in report["runs"] if run.get("reads")]
    if read_runs:
        lines += [
            "",
            "| scenario | read | count | per s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for run in read_runs:
            for kind, figures in run["reads"].items():
                lines.append(
                    f"| {run['scenario']} | {kind} | {figures['count']} | {figures['per_s']:,.0f} "
                    f"| {_ms(figures['p50'])} | {_ms(figures['p99'])} |"
                )
    return "\n".join(lines)


def _machine_ms(machine_cpu: dict[str, Any] | None) -> str:
    """The whole machine's busy CPU per completed operation (every process on it)."""
    per_operation = machine_cpu["ms_per_completed"]["machine"] if machine_cpu else None
    return "n/a" if per_operation is None else f"{per_operation:.3f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"
