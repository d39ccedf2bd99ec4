"""`billing bench`: the options, one run, the report, the audit and the exit status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from bench.config import Settings
from bench.workload import EVENT_SOURCES, MIX_DEFAULT, Workload, batch_size_max, parse_mix

F = TypeVar("F", bound=Callable[..., Any])

duration_default_s = 30.0
concurrency_default = 32
drain_timeout_default_s = 60.0


def events_option(default: str) -> Callable[[F], F]:
    """`--events`: where a run reads its outcomes (`bench` and `bench-suite` differ in default)."""
    return click.option(
        "--events",
        default=default,
        show_default=True,
        type=click.Choice(EVENT_SOURCES),
        help="read outcomes from the bench's own queue, or from billing.responses as the "
        "service's only client (takes every event there; refused while another client "
        "consumes there)",
    )


def _mix(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, int]:
    try:
        return parse_mix(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="the API")
@click.option("--token", help="API token [default: the first of BILLING_API_TOKENS]")
@click.option(
    "--mix",
    default=MIX_DEFAULT,
    show_default=True,
    callback=_mix,
    help="weights of transfer, credit, debit, hold (each hold is then captured or released)",
)
@click.option("--accounts", default=10_000, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--hot",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="every transfer touches one of this many hot accounts (0: uniform)",
)
@click.option(
    "--concurrency",
    default=concurrency_default,
    show_default=True,
    type=click.IntRange(min=1),
    help="requests in flight (keep-alive connections)",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    help="closed loop of this many clients: each sends its next request once its previous "
    "POST is answered (instead of --concurrency and --rate)",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help=f"seconds of load [default: {duration_default_s:g} unless --count]",
)
@click.option("--count", type=click.IntRange(min=1), help="operations to send")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="target operations per second (open loop) [default: as fast as answered]",
)
@click.option(
    "--batch",
    default=0,
    show_default=True,
    type=click.IntRange(0, batch_size_max),
    help="operations per POST /v1/operations/batch (0: one POST per operation)",
)
@click.option(
    "--amqp-share",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="share of operations published to the billing.requests intake instead",
)
@click.option(
    "--drain-timeout",
    default=drain_timeout_default_s,
    show_default=True,
    type=click.FloatRange(min=0),
    help="seconds to wait for outstanding events",
)
@click.option(
    "--max-outstanding",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="accepted operations without an outcome yet, at most (0: no limit); keeps a fast "
    "intake from running ahead of the workers, so the run measures a sustained rate",
)
@click.option(
    "--readers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="readers beside the load, each a closed loop of the read mix (an account's "
    "operations and their next page, operations by type, accounts, balances at a moment, "
    "one operation), on connections of their own; their latency is reported by kind",
)
@events_option(default="own")
@click.option("--seed", type=int, help="seed of the operation draw (for a repeatable run)")
@click.option("--json", "as_json", is_flag=True, help="print the figures as one JSON object")
def bench(
    url: str,
    token: str | None,
    mix: dict[str, int],
    accounts: int,
    hot: int,
    concurrency: int,
    clients: int | None,
    duration: float | None,
    count: int | None,
    rate: float | None,
    batch: int,
    amqp_share: float,
    drain_timeout: float,
    max_outstanding: int,
    readers: int,
    events: str,
    seed: int | None,
    as_json: bool,
) -> None:
    """Drive a running service end to end and measure it.

    Operations go in over HTTP (and optionally the AMQP intake); outcomes are
    read from the events exchange, through the bench's own queue or from
    billing.responses (--events). Each POST's time to its answer and each
    operation's time from its POST to its event are measured. The bench
    creates and credits its own accounts (ids start with the run id), prints
    progress each second on stderr, then the figures and the ledger audit.
    Exits 1 when the audit fails or operations stayed pending.
    """
    settings = Settings.from_env()
    token = api_token(settings, token)
    if hot >= accounts:
        raise click.BadParameter("must be below --accounts", param_hint="--hot")
    if duration is None and count is None:
        duration = duration_default_s
    if clients is not None:
        for name in ("concurrency", "rate"):
            if (
                click.get_current_context().get_parameter_source(name)
                is not ParameterSource.DEFAULT
            ):
                raise click.UsageError(f"--clients is a closed loop: it takes no --{name}")
        concurrency = clients
    setting = {
        "url": url,
        "batch": batch,
        "mix": mix,
        "accounts": accounts,
        "hot": hot,
        "concurrency": concurrency,
        "clients": clients,
        "rate": rate,
        "amqp_share": amqp_share,
        "max_outstanding": max_outstanding,
        "events": events,
        "readers": readers,
    }
    summary = run_once(settings, token, setting, duration, count, drain_timeout, seed)
    from bench.report import render

    click.echo(json.dumps(summary, default=str) if as_json else render(summary))
    sys.exit(0 if summary["ok"] else 1)


def api_token(settings: Settings, token: str | None) -> str:
    """The token given, or the first of BILLING_API_TOKENS."""
    token = token or next(iter(settings.api_tokens), None)
    if not token:
        raise click.UsageError("no API token: pass --token or set BILLING_API_TOKENS")
    return token


def run_once(
    settings: Settings,
    token: str,
    setting: dict[str, Any],
    duration: float | None,
    count: int | None,
    drain_timeout: float,
    seed: int | None,
) -> dict[str, Any]:
    """One measured run with its own accounts; the figures, with the audit afterwards."""
    # Imported here, so other `billing` commands start without loading the bench.
    from bench.client import SetupError
    from bench.report import summarize
    from bench.runner import Plan, run

    plan = Plan(
        setting["url"],
        token,
        setting["concurrency"],
        duration,
        count,
        setting["rate"],
        setting["batch"],
        drain_timeout,
        setting["max_outstanding"],
        setting["events"],
        setting.get("readers", 0),
    )
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    workload = Workload(
        run_id, setting["mix"], setting["accounts"], setting["hot"], setting["amqp_share"], seed
    )
    try:
        record = asyncio.run(run(plan, workload, settings))
    except SetupError as error:
        raise click.ClickException(f"setup failed: {error}") from error
    return summarize(record, {"run_id": run_id, **setting}, audit(settings.database_url))


def audit(database_url: str) -> dict[str, Any]:
    """The ledger audit of the whole database: `billing audit --json`, the service's command."""
    done = subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit", "--json"],
        env={**os.environ, "BILLING_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout))
    except ValueError:  # an unreachable database fails the run, it does not crash it
        return {"passed": False, "error": _exception_line(done), "violations": []}


def _exception_line(done: subprocess.CompletedProcess[str]) -> str:
    """The line naming the exception a command died of (the last traceback's first unindented)."""
    lines = done.stderr.splitlines()
    starts = [at for at, line in enumerate(lines) if line.startswith("Traceback")]
    after = lines[starts[-1] + 1 :] if starts else lines
    named = [line for line in after if line.strip() and not line[0].isspace()]
    return named[0] if named else f"exited {done.returncode}"
