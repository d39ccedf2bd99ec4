"""The `billing` command: migrate, run the API, workers and beat, audit the ledger."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import click

from billing import limits
from billing.config import Settings, api_tokens_problem

ROOT = Path(__file__).resolve().parent.parent.parent


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class _Commands(click.Group):
    """`billing`'s own commands, and those installed packages add to it, loaded when run.

    A package adds a command with an entry point of the group `billing.commands`
    (pyproject.toml: the load generator's `bench` and `bench-suite`), as Flask's
    `flask.commands` does: the service's code never imports the load generator.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_added_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (entry_point := _added_commands().get(cmd_name)):
            loaded = entry_point.load()
            assert isinstance(loaded, click.Command), entry_point
            return loaded
        return command


def _added_commands() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group="billing.commands")}


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The billing service: a double-entry ledger applied by Celery workers."""


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (creating the database when missing)."""
    from billing.adapters.database import ensure_database
    from billing.adapters.migrate import upgrade

    settings = Settings.from_env()
    if ensure_database(settings.database_url):
        click.echo("created the database")
    upgrade(settings.database_url)
    click.echo("schema is up to date")


def api_command(host: str, port: int, workers: int, connections: int) -> list[str]:
    return _python_module(
        "gunicorn",
        "api:create_app()",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        # gevent: a process serves its requests in greenlets of one thread.
        # With a thread per request, the threads' switches and their contention
        # for the GIL took a third of the API's CPU under load (commit
        # 629ba8e); psycopg2 and the broker connection wait cooperatively.
        # gunicorn's gevent worker, answering what it cannot parse with the
        # contract's error body rather than an HTML page.
        "--worker-class",
        "api.gunicorn_worker.JsonErrorGeventWorker",
        "--worker-connections",
        str(connections),
        "--timeout",
        str(limits.api_worker_timeout_s),
        "--graceful-timeout",
        str(limits.api_graceful_timeout_s),
        "--keep-alive",
        str(limits.api_keep_alive_s),
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn processes")
@click.option(
    "--connections",
    default=limits.api_connections_per_process,
    show_default=True,
    type=click.IntRange(min=1),
    help="requests served at once per process (gevent greenlets)",
)
def api(host: str, port: int, workers: int, connections: int) -> None:
    """Serve the HTTP API with gunicorn (gevent workers)."""
    _require_tokens()
    _use_metrics_dir(wipe=False)
    os.execv(sys.executable, api_command(host, port, workers, connections))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--metrics-port", type=int, default=0, help="serve /metrics on this port (0: off)")
@click.pass_context
def worker(ctx: click.Context, metrics_port: int) -> None:
    """A Celery worker; other flags go to `celery worker` (e.g. --concurrency 4)."""
    _use_metrics_dir(wipe=False)
    if metrics_port:
        os.environ["BILLING_WORKER_METRICS_PORT"] = str(metrics_port)
    os.execv(sys.executable, _python_module("celery", "-A", "tasks", "worker", *ctx.args))


def _use_metrics_dir(*, wipe: bool) -> str:
    """Point prometheus-client's multiprocess mode at this machine's metrics directory."""
    from billing.adapters.metrics import prepare_metrics_dir

    default = os.path.join(tempfile.gettempdir(), f"billing-metrics-{os.getuid()}")
    path = os.environ.get("BILLING_METRICS_DIR") or default
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prepare_metrics_dir(path, wipe=wipe)
    return path


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """The periodic jobs: hold expiry, outbox relay and recovery sweep (Celery beat)."""
    os.execv(
        sys.executable, _python_module("celery", "-A", "tasks", "beat", *beat_args(), *ctx.args)
    )


def beat_args() -> list[str]:
    # An in-memory schedule: every job is an interval, nothing to persist.
    return ["--scheduler", "celery.beat:Scheduler", "--loglevel", "INFO"]


def flower_command(address: str, port: int) -> list[str]:
    """Flower with no secret in its arguments, which any local user can read (`ps`)."""
    return _python_module(
        "celery", "-A", "tasks", "flower", f"--address={address}", f"--port={port}"
    )


def flower_environment(settings: Settings) -> dict[str, str]:
    """Flower's login and the broker API's URL (which holds the broker password).

    Flower reads each of its options from a FLOWER_<OPTION> variable too; a
    process's environment is readable only by its own user, unlike its
    arguments.
    """
    return {
        "FLOWER_BASIC_AUTH": settings.flower_auth,
        "FLOWER_BROKER_API": broker_api_url(settings),
    }


def broker_api_url(settings: Settings) -> str:
    """The RabbitMQ management API that shows queue lengths in Flower.

    Of a cluster, the first node's (any node's API shows every queue of the
    cluster); BILLING_BROKER_API_URL names another, e.g. a load balancer's.
    """
    explicit = os.environ.get("BILLING_BROKER_API_URL")
    if explicit:
        return explicit
    from urllib.parse import urlsplit

    broker = urlsplit(settings.broker_urls[0])
    credentials = f"{broker.username or 'guest'}:{broker.password or 'guest'}"
    return f"http://{credentials}@{broker.hostname or '127.0.0.1'}:15672/api/"


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True, type=int)
def flower(address: str, port: int) -> None:
    """The Flower dashboard of the workers, behind basic auth (BILLING_FLOWER_AUTH)."""
    settings = Settings.from_env()
    _require_flower_auth(settings)
    environment = {**os.environ, **flower_environment(settings)}
    os.execve(sys.executable, flower_command(address, port), environment)


def _require_flower_auth(settings: Settings) -> None:
    user, _, password = settings.flower_auth.partition(":")
    if not user or not password:
        raise click.ClickException(
            "BILLING_FLOWER_AUTH must be user:password: Flower shows every task's arguments, "
            "so it does not start without authentication."
        )


@main.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='print {"passed", "violations": [{"invariant", "rows"}]} as one JSON object',
)
def audit(as_json: bool) -> None:
    """Check every ledger invariant; exit 1 listing the violations."""
    from billing.adapters.audit import run_audit
    from billing.adapters.database import make_engine

    engine = make_engine(Settings.from_env().database_url)
    violations = run_audit(engine)
    engine.dispose()
    if as_json:
        listed = [{"invariant": v.invariant, "rows": v.rows} for v in violations]
        click.echo(json.dumps({"passed": not violations, "violations": listed}, default=str))
        sys.exit(1 if violations else 0)
    if not violations:
        click.echo("audit passed: every invariant holds")
        return
    for violation in violations:
        click.echo(f"VIOLATION: {violation.invariant}", err=True)
        for row in violation.rows:
            click.echo(f"  {row}", err=True)
    sys.exit(1)


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="API port")
@click.option("--concurrency", default=2, show_default=True, type=int, help="worker processes")
@click.option("--flower-port", default=5555, show_default=True, type=int)
@click.option(
    "--services",
    "start_services",
    is_flag=True,
    help="start a missing PostgreSQL or RabbitMQ with Docker Compose without asking",
)
@click.option(
    "--wait-for-services",
    "services_wait_s",
    default=limits.up_services_wait_s,
    show_default=True,
    type=click.FloatRange(min=0),
    help="seconds to wait for a PostgreSQL or RabbitMQ that does not answer yet",
)
@click.option(
    "--log-dir",
    default=".billing/logs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where each process's output goes, one file per process",
)
@click.option("--verbose", is_flag=True, help="show every process's output here instead")
def up(
    port: int,
    concurrency: int,
    flower_port: int,
    start_services: bool,
    services_wait_s: float,
    log_dir: Path,
    verbose: bool,
) -> None:
    """Check PostgreSQL and RabbitMQ, migrate, then run the API, a worker, beat and Flower.

    The banner (token, curl line) comes once the API is ready and the worker
    answers a ping. Ctrl-C stops everything.
    """
    from billing.cli.preflight import run_preflight

    if Settings.from_env().api_tokens:
        _require_tokens()
    run_preflight(
        Settings.from_env(),
        project=_project_directory(),
        start_services=start_services,
        wait_s=services_wait_s,
    )
    ctx = click.get_current_context()
    ctx.invoke(migrate)
    os.environ.setdefault("BILLING_LOG_FORMAT", "text")
    _use_metrics_dir(wipe=True)
    env = dict(os.environ)
    if not Settings.from_env().api_tokens:
        env["BILLING_API_TOKENS"] = new_api_token()
    if not Settings.from_env().flower_auth:
        env["BILLING_FLOWER_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
    token = env["BILLING_API_TOKENS"].split(",")[0].strip()
    commands = {
        "api": api_command("127.0.0.1", port, 2, limits.api_connections_per_process),
        "worker": _python_module(
            "celery",
            "-A",
            "tasks",
            "worker",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
        ),
        "beat": _python_module("celery", "-A", "tasks", "beat", *beat_args()),
        # `billing flower` hands the login and the broker password to Flower
        # in its environment, never in its arguments.
        "flower": _python_module(
            "billing.cli", "flower", "--address", "127.0.0.1", "--port", str(flower_port)
        ),
    }
    worker_name = f"up{os.getpid()}@{socket.gethostname()}"
    commands["worker"] += ["--hostname", worker_name]
    banner = (
        f"\nbilling is up: API on http://127.0.0.1:{port} (docs: /docs, metrics: /metrics)\n"
        f"token:  {token}\n"
        f"try:    curl -s -H 'Authorization: Bearer {token}' "
        f"http://127.0.0.1:{port}/v1/accounts/alice\n"
        f"flower: http://127.0.0.1:{flower_port} (login {env['BILLING_FLOWER_AUTH']})\n"
        "Ctrl-C stops everything.\n"
    )
    _run_until_stopped(
        commands,
        env,
        banner=banner,
        api_url=f"http://127.0.0.1:{port}",
        worker_name=worker_name,
        log_dir=None if verbose else log_dir.resolve(),
    )


def _project_directory() -> Path:
    """Where docker-compose.yml is: the source tree, or else the current directory."""
    return ROOT if (ROOT / "docker-compose.yml").exists() else Path.cwd()


def _run_until_stopped(
    commands: dict[str, list[str]],
    env: dict[str, str],
    *,
    banner: str,
    api_url: str,
    worker_name: str,
    log_dir: Path | None,
) -> None:
    """Start the processes, print the banner once the API and worker answer, tend until Ctrl-C."""
    from billing.adapters import probes
    from billing.adapters.celery_client import make_celery_app
    from billing.supervisor import Supervisor, WaitingEventsWatch, wait_until_ready

    stopping = _stop_on_signals()
    supervisor = Supervisor(commands, env, ROOT, log_dir)
    supervisor.start_all()
    app = make_celery_app()
    timeout_s = limits.up_worker_ping_timeout_s

    def worker_answers() -> str:
        return "" if probes.worker_answers_ping(app, worker_name, timeout_s) else "no answer yet"

    checks = [
        (f"the API at {api_url}/readyz", lambda: probes.api_readiness(api_url, timeout_s)),
        (f"the worker {worker_name} to answer a ping", worker_answers),
    ]
    events = WaitingEventsWatch(lambda: probes.api_waiting_events(api_url, timeout_s))
    if wait_until_ready(supervisor, checks, stopping):
        click.echo(banner)
        while not stopping() and supervisor.tend():
            events.check()
            time.sleep(limits.up_ready_poll_interval_s / 2)
    clean = supervisor.stop_all()
    if not stopping() or not clean:
        sys.exit(1)


def _stop_on_signals() -> Callable[[], bool]:
    """Ctrl-C (SIGINT) and SIGTERM ask to stop; the returned function says whether one came."""
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return lambda: bool(received)


def _require_tokens() -> None:
    problem = api_tokens_problem(Settings.from_env().api_tokens)
    if problem:
        raise click.ClickException(problem)


def new_api_token() -> str:
    """A token for a `billing up` session: 32 URL-safe characters (192 random bits)."""
    return secrets.token_urlsafe(24)


from billing.cli.dead_letters import dead_letters  # noqa: E402

main.add_command(dead_letters)
