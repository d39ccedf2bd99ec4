"""The `billing` command: migrate, run the API, workers and beat, audit the ledger."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from billing import limits
from billing.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
        "--worker-class",
        "gevent",
        "--worker-connections",
        str(connections),
        "--timeout",
        "60",
        "--graceful-timeout",
        "10",
        # Idle keep-alive connections stay open 75 s, not gunicorn's 2: a
        # client (or load balancer) that reuses a pooled connection the
        # server has just closed gets its request reset. Longer than the
        # usual 60 s idle timeout of load balancers, so they close first.
        "--keep-alive",
        "75",
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


def flower_command(address: str, port: int, auth: str, broker_api: str | None) -> list[str]:
    command = _python_module(
        "celery",
        "-A",
        "tasks",
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--basic-auth={auth}",
    )
    if broker_api:
        command.append(f"--broker-api={broker_api}")
    return command


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
    command = flower_command(address, port, settings.flower_auth, broker_api_url(settings))
    os.execv(sys.executable, command)


def _require_flower_auth(settings: Settings) -> None:
    user, _, password = settings.flower_auth.partition(":")
    if not user or not password:
        raise click.ClickException(
            "BILLING_FLOWER_AUTH must be user:password: Flower shows every task's arguments, "
            "so it does not start without authentication."
        )


@main.command()
def audit() -> None:
    """Check every ledger invariant; exit 1 listing the violations."""
    from billing.adapters.audit import run_audit
    from billing.adapters.database import make_engine

    engine = make_engine(Settings.from_env().database_url)
    violations = run_audit(engine)
    engine.dispose()
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
def up(port: int, concurrency: int, flower_port: int) -> None:
    """Migrate, then run the API, a worker, beat and Flower in the foreground; Ctrl-C stops all."""
    ctx = click.get_current_context()
    ctx.invoke(migrate)
    os.environ.setdefault("BILLING_LOG_FORMAT", "text")
    _use_metrics_dir(wipe=True)
    env = dict(os.environ)
    if not Settings.from_env().api_tokens:
        env["BILLING_API_TOKENS"] = secrets.token_urlsafe(24)
    if not Settings.from_env().flower_auth:
        env["BILLING_FLOWER_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
    token = env["BILLING_API_TOKENS"].split(",")[0].strip()
    settings = Settings.from_env()
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
        "flower": flower_command(
            "127.0.0.1", flower_port, env["BILLING_FLOWER_AUTH"], broker_api_url(settings)
        ),
    }
    children = {name: subprocess.Popen(cmd, env=env, cwd=ROOT) for name, cmd in commands.items()}
    click.echo(
        f"\nbilling is up: API on http://127.0.0.1:{port} (docs: /docs, metrics: /metrics)\n"
        f"token:  {token}\n"
        f"try:    curl -s -H 'Authorization: Bearer {token}' "
        f"http://127.0.0.1:{port}/v1/accounts/alice\n"
        f"flower: http://127.0.0.1:{flower_port} (login {env['BILLING_FLOWER_AUTH']})\n"
        "Ctrl-C stops everything.\n"
    )
    _supervise(children)


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        exited = [name for name, child in children.items() if child.poll() is not None]
        if exited:
            click.echo(f"{', '.join(exited)} exited; stopping the rest", err=True)
            break
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    if (
        any(child.returncode not in (0, -signal.SIGTERM, None) for child in children.values())
        and not stopping
    ):
        sys.exit(1)


def _require_tokens() -> None:
    if not Settings.from_env().api_tokens:
        raise click.ClickException(
            "BILLING_API_TOKENS is empty: set at least one token (comma-separated), "
            "e.g. BILLING_API_TOKENS=$(openssl rand -hex 16), so the API can authenticate clients."
        )


from billing.bench import bench, bench_suite  # noqa: E402

main.add_command(bench)
main.add_command(bench_suite)


from billing.dead_letters_cli import dead_letters  # noqa: E402

main.add_command(dead_letters)

if __name__ == "__main__":
    main()
