"""The preflight of `billing up`: PostgreSQL and RabbitMQ answer, or the user learns how to.

Before anything starts, each data store is probed with a short timeout. One
that does not answer is offered to be started with Docker Compose (when it is
on the machine and the URL points at this machine), or waited for a little
(it may be starting), and otherwise named in a message that says where it was
looked for and how to get it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from billing import limits
from billing.adapters import compose, probes
from billing.config import Settings

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


@dataclass(frozen=True)
class DataStore:
    """One service `billing up` needs, and how a user gets it."""

    name: str
    compose_service: str
    debian_package: str
    variable: str
    example_url: str
    url: str
    display_url: str
    host: str
    probe: Callable[[str, float], probes.Probe]

    def check(self) -> probes.Probe:
        return self.probe(self.url, limits.up_probe_timeout_s)


def data_stores(settings: Settings) -> list[DataStore]:
    return [
        DataStore(
            name="PostgreSQL",
            compose_service="postgres",
            debian_package="postgresql",
            variable="BILLING_DATABASE_URL",
            example_url="postgresql+psycopg2://user:password@host:5432/billing",
            url=settings.database_url,
            display_url=probes.database_display_url(settings.database_url),
            host=probes.database_address(settings.database_url)[0],
            probe=probes.probe_database,
        ),
        DataStore(
            name="RabbitMQ",
            compose_service="rabbitmq",
            debian_package="rabbitmq-server",
            variable="BILLING_BROKER_URL",
            example_url="amqp://user:password@host:5672//",
            url=settings.broker_url,
            display_url=probes.broker_display_url(settings.broker_url),
            host=probes.broker_address(settings.broker_url)[0],
            probe=probes.probe_broker,
        ),
    ]


def run_preflight(
    settings: Settings, *, project: Path, start_services: bool, wait_s: float
) -> None:
    """Return once both data stores answer; otherwise a ClickException that says what to do."""
    stores = data_stores(settings)
    found = {store.name: store.check() for store in stores}
    missing = [store for store in stores if not found[store.name].ok]
    if not missing:
        return
    if _any_local(missing, found):
        docker = _compose_for(project, settings)
        if start_services and docker is None:
            click.echo("--services: Docker Compose with a running Docker engine was not found")
        for store in missing:
            startable = not found[store.name].reachable and store.host in _LOCAL_HOSTS
            if docker and startable and (start_services or _user_agrees(store)):
                found[store.name] = _start_with_compose(docker, store)
    _wait_for_starting(missing, found, wait_s)
    still = [store for store in missing if not found[store.name].ok]
    if still:
        raise click.ClickException(
            "\n\n".join(missing_message(store, found[store.name]) for store in still)
        )


def _any_local(missing: list[DataStore], found: dict[str, probes.Probe]) -> bool:
    return any(not found[s.name].reachable and s.host in _LOCAL_HOSTS for s in missing)


def _compose_for(project: Path, settings: Settings) -> compose.ComposeServices | None:
    command = compose.find_compose(project)
    if command is None:
        return None
    env = compose.compose_environment(settings.database_url, settings.broker_url)
    return compose.ComposeServices(command, project, env)


def _user_agrees(store: DataStore) -> bool:
    if not sys.stdin.isatty():
        return False
    return click.confirm(
        f"{store.name} does not answer at {store.display_url}. "
        f"Start it with Docker Compose (service {store.compose_service})?",
        default=True,
    )


def _start_with_compose(docker: compose.ComposeServices, store: DataStore) -> probes.Probe:
    click.echo(f"starting {store.compose_service} with Docker Compose and waiting for it...")
    try:
        docker.start(store.compose_service)
        docker.wait_healthy(store.compose_service)
    except compose.ComposeError as error:
        click.echo(str(error), err=True)
        return store.check()
    click.echo(f"{store.compose_service} is healthy")
    return store.check()


def _wait_for_starting(
    missing: list[DataStore], found: dict[str, probes.Probe], wait_s: float
) -> None:
    """Probe again, up to `wait_s`, the stores that nothing answered for: they may be starting."""
    waiting = [s for s in missing if not found[s.name].ok and not found[s.name].reachable]
    if not waiting or wait_s <= 0:
        return
    for store in waiting:
        click.echo(
            f"waiting up to {wait_s:g} s for {store.name} at {store.display_url} "
            f"({found[store.name].reason})"
        )
    deadline = time.monotonic() + wait_s
    while waiting and time.monotonic() < deadline:
        time.sleep(limits.up_probe_interval_s)
        for store in list(waiting):
            found[store.name] = store.check()
            if found[store.name].reachable:
                waiting.remove(store)
                if found[store.name].ok:
                    click.echo(f"{store.name} answers")


def missing_message(store: DataStore, probe: probes.Probe) -> str:
    """What is missing, where it was looked for, and the three ways to get it."""
    if probe.reachable:
        return (
            f"{store.name} at {store.display_url} answered but refused: {probe.reason}\n"
            f"  Check the user and password in {store.variable}, or point it elsewhere:\n"
            f"    export {store.variable}={store.example_url}"
        )
    return (
        f"{store.name} does not answer at {store.display_url} ({probe.reason}).\n"
        f"  Install it (Debian/Ubuntu):  sudo apt-get install {store.debian_package}\n"
        f"  or run it in Docker:         billing up --services\n"
        f"    (in the project's directory: {compose.compose_line(store.compose_service)})\n"
        f"  or point to another one:     export {store.variable}={store.example_url}"
    )
