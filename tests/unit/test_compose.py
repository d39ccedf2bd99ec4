"""docker-compose.yml: `docker-compose config` accepts it; it has every service the docs name.

docs/operations.md's compose section lists the services in a table whose
first column is `service`; that table and the compose file must name the
same services.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE_SCRIPT = ROOT / "docker" / "postgres-init" / "10-billing-role.sh"
# The stack of issue 5: the data stores, the one-shot migration and every role of the image.
STACK = {"postgres", "rabbitmq", "migrate", "api", "worker", "beat", "flower"}
# What compose refuses to start without (every secret); any value does for checking the file,
# and each is distinct so the rendered file shows where it went.
REQUIRED_VARIABLES = {
    "BILLING_API_TOKENS": "api-token-for-the-compose-test",
    "BILLING_FLOWER_AUTH": "admin:flower-password",
    "POSTGRES_PASSWORD": "postgres-superuser-password",
    "BILLING_DB_PASSWORD": "service-role-password",
    "RABBITMQ_PASSWORD": "rabbitmq-password",
}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: `apt-get install docker-compose` (.ci/run does)"
    return subprocess.run(
        [executable, "--file", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **REQUIRED_VARIABLES} if env is None else env,
        timeout=60,
    )


def rendered(**variables: str) -> dict[str, Any]:
    """The file as compose reads it, variables substituted (`docker-compose config`)."""
    return copy.deepcopy(_rendered(tuple(sorted(variables.items()))))


@functools.cache
def _rendered(variables: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Rendered once per set of variables: the file does not change during a run."""
    env = {**os.environ, **REQUIRED_VARIABLES, **dict(variables)}
    done = compose("config", env=env)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each port the service publishes.

    docker-compose 1 renders a port as `address:port:target/protocol`, compose 2 as a mapping.
    """
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((address, int(parts[-2])))
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Each mount's target and source, in either rendering of compose."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target, *_ = str(volume).split(":")
            found[target] = source
    return found


def compose_services() -> set[str]:
    done = compose("config", "--services")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def documented_services() -> set[str]:
    """The first column of the table headed `service` in docs/operations.md's compose section."""
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = re.search(r"^## Docker and compose\b.*?(?=^## |\Z)", operations, re.M | re.S)
    assert section, "docs/operations.md has no '## Docker and compose' section"
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.group(0).splitlines()
        if line.lstrip().startswith("|")
    ]
    assert rows and rows[0][0].lower() == "service", (
        "docs/operations.md's compose section has no table whose first column is `service`"
    )
    return {row[0].strip("`") for row in rows[2:] if row[0]}


def test_docker_compose_config_accepts_the_file() -> None:
    done = compose("config", "--quiet")
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_run_without_any_of_its_secrets() -> None:
    for variable in REQUIRED_VARIABLES:
        env = {**os.environ, **REQUIRED_VARIABLES}
        del env[variable]
        done = compose("config", "--quiet", env=env)
        assert done.returncode != 0
        assert variable in done.stderr


def test_the_compose_file_runs_the_whole_stack() -> None:
    assert compose_services() >= STACK


def test_every_service_the_docs_name_is_in_the_compose_file_and_back() -> None:
    named = documented_services()
    assert named >= STACK, f"docs/operations.md does not name {STACK - named}"
    services = compose_services()
    assert named <= services, f"the docs name services compose does not have: {named - services}"
    assert services <= named, f"the docs do not name these services: {services - named}"


def test_every_published_port_is_on_this_machine_only_by_default() -> None:
    services = rendered()["services"]
    ports = {name: published(service) for name, service in services.items()}
    assert ports["api"] == [("127.0.0.1", 8000)]
    assert all(address == "127.0.0.1" for found in ports.values() for address, _ in found), ports


def test_the_operator_may_publish_the_api_on_another_address() -> None:
    services = rendered(BILLING_API_PUBLISH_ADDRESS="0.0.0.0")["services"]
    assert published(services["api"]) == [("0.0.0.0", 8000)]


def test_the_rabbitmq_management_ui_is_not_published() -> None:
    services = rendered()["services"]
    assert all(port != 15672 for s in services.values() for _, port in published(s))


def test_every_password_is_the_operators_with_no_default() -> None:
    services = rendered()["services"]
    postgres = services["postgres"]["environment"]
    rabbitmq = services["rabbitmq"]["environment"]
    api = services["api"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == REQUIRED_VARIABLES["POSTGRES_PASSWORD"]
    assert rabbitmq["RABBITMQ_DEFAULT_PASS"] == REQUIRED_VARIABLES["RABBITMQ_PASSWORD"]
    assert urlsplit(api["BILLING_BROKER_URL"]).password == REQUIRED_VARIABLES["RABBITMQ_PASSWORD"]
    flower = services["flower"]["environment"]
    broker_api = urlsplit(flower["BILLING_BROKER_API_URL"])
    assert broker_api.password == REQUIRED_VARIABLES["RABBITMQ_PASSWORD"]


def test_the_service_connects_to_postgresql_as_its_own_role_not_the_superuser() -> None:
    services = rendered()["services"]
    for name in ("migrate", "api", "worker", "beat", "flower"):
        database = urlsplit(services[name]["environment"]["BILLING_DATABASE_URL"])
        assert database.username == "billing", name
        assert database.password == REQUIRED_VARIABLES["BILLING_DB_PASSWORD"], name
    postgres = services["postgres"]
    assert (
        postgres["environment"]["BILLING_DB_PASSWORD"] == REQUIRED_VARIABLES["BILLING_DB_PASSWORD"]
    )
    # The postgres image runs what is mounted here when it creates its data directory.
    initdb = mounts(postgres).get("/docker-entrypoint-initdb.d")
    assert initdb, postgres["volumes"]
    assert (Path(initdb) / ROLE_SCRIPT.name).is_file()
