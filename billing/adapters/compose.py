"""PostgreSQL or RabbitMQ for `billing up`, started from the project's docker-compose.yml.

Only the one service that is missing is started, in a compose project of its
own (`billing-services`, so its volumes are not those of a full `docker compose
up`), with docker-compose.services.yml on top: that file publishes the
service on this machine at the port of the configured URL and lets the URL's
user in, so the configuration that found it missing finds it now.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from kombu import Connection
from sqlalchemy.engine import make_url

from billing import limits

PROJECT = "billing-services"
COMPOSE_FILE = "docker-compose.yml"
SERVICES_FILE = "docker-compose.services.yml"
# The full stack's file refuses to load without these; the two data stores never read them.
# Secrets docker-compose.yml requires (`:?`) of services the preflight never
# starts; the stores it starts take their users from the URLs and the override.
_REQUIRED_BY_THE_FILE = (
    "BILLING_API_TOKENS",
    "BILLING_FLOWER_AUTH",
    "POSTGRES_PASSWORD",
    "BILLING_DB_PASSWORD",
    "RABBITMQ_PASSWORD",
)


class ComposeError(Exception):
    """Docker Compose failed to start a service or to report it healthy; the message says how."""


def compose_line(service: str) -> str:
    """The command a user can type in the project's directory to start `service` alone."""
    return (
        f"docker compose --project-name {PROJECT} --file {COMPOSE_FILE} --file {SERVICES_FILE} "
        f"up --detach {service}"
    )


def find_compose(directory: Path) -> list[str] | None:
    """`docker compose` or `docker-compose`, when the file is there and a Docker engine answers."""
    docker = shutil.which("docker")
    if docker is None or not (directory / COMPOSE_FILE).exists():
        return None
    for command in ([docker, "compose"], [shutil.which("docker-compose") or ""]):
        if command[0] and _succeeds([*command, "version"]):
            break
    else:
        return None
    return command if _succeeds([docker, "info"]) else None


def _succeeds(command: list[str]) -> bool:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=limits.up_docker_command_timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def compose_environment(database_url: str, broker_url: str) -> dict[str, str]:
    """The variables docker-compose.services.yml reads: the ports and users of the URLs."""
    database = make_url(database_url)
    broker = Connection(broker_url)
    env = dict(os.environ)
    for name in _REQUIRED_BY_THE_FILE:
        env.setdefault(name, "unused-by-the-data-stores")
    env.update(
        BILLING_POSTGRES_PORT=str(database.port or 5432),
        BILLING_POSTGRES_USER=database.username or "postgres",
        BILLING_RABBITMQ_PORT=str(broker.port or 5672),
        BILLING_RABBITMQ_USER=broker.userid or "guest",
        BILLING_RABBITMQ_PASSWORD=broker.password or "guest",
    )
    return env


class ComposeServices:
    """Starts one service of the compose files and waits for its health check."""

    def __init__(self, command: list[str], directory: Path, env: dict[str, str]) -> None:
        self._command, self._directory, self._env = command, directory, env

    def _compose(self, *args: str) -> list[str]:
        return [
            *self._command,
            "--project-name",
            PROJECT,
            "--file",
            str(self._directory / COMPOSE_FILE),
            "--file",
            str(self._directory / SERVICES_FILE),
            *args,
        ]

    def _run(self, command: list[str], timeout_s: float) -> str:
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=self._directory,
                env=self._env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ComposeError(f"{' '.join(command)} did not finish in {timeout_s} s") from error
        if done.returncode != 0:
            raise ComposeError(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
        return done.stdout

    def start(self, service: str) -> None:
        self._run(self._compose("up", "--detach", service), limits.up_compose_start_timeout_s)

    def wait_healthy(self, service: str) -> None:
        deadline = time.monotonic() + limits.up_compose_healthy_wait_s
        timeout_s = limits.up_docker_command_timeout_s
        status = ""
        while time.monotonic() < deadline:
            containers = self._run(self._compose("ps", "--quiet", service), timeout_s).split()
            if containers:
                status = self._run(
                    ["docker", "inspect", "--format", "{{.State.Health.Status}}", containers[0]],
                    timeout_s,
                ).strip()
                if status == "healthy":
                    return
            time.sleep(limits.up_probe_interval_s)
        raise ComposeError(
            f"{service} was not healthy after {limits.up_compose_healthy_wait_s} s "
            f"(last status: {status or 'no container'}); see: "
            f"docker compose --project-name {PROJECT} logs {service}"
        )
