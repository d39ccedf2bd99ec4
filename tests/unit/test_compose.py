"""docker-compose.yml: `docker-compose config` accepts it; it has every service the README names.

The README's Docker section lists the services in a table whose first column
is `service`; that table and the compose file must name the same services.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The stack of issue 5: the data stores, the one-shot migration and every role of the image.
STACK = {"postgres", "rabbitmq", "migrate", "api", "worker", "beat", "flower"}
# What compose refuses to start without; any value does for checking the file.
REQUIRED_VARIABLES = {"BILLING_API_TOKENS": "a-token", "BILLING_FLOWER_AUTH": "admin:secret"}


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


def compose_services() -> set[str]:
    done = compose("config", "--services")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def readme_services() -> set[str]:
    """The first column of the table headed `service` in the README's `## Docker` section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Docker\b.*?(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Docker' section"
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.group(0).splitlines()
        if line.lstrip().startswith("|")
    ]
    assert rows and rows[0][0].lower() == "service", (
        "the README's Docker section has no table whose first column is `service`"
    )
    return {row[0].strip("`") for row in rows[2:] if row[0]}


def test_docker_compose_config_accepts_the_file() -> None:
    done = compose("config", "--quiet")
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_run_without_the_api_token_or_the_flower_login() -> None:
    for variable in REQUIRED_VARIABLES:
        env = {**os.environ, **REQUIRED_VARIABLES}
        del env[variable]
        done = compose("config", "--quiet", env=env)
        assert done.returncode != 0
        assert variable in done.stderr


def test_the_compose_file_runs_the_whole_stack() -> None:
    assert compose_services() >= STACK


def test_every_service_the_readme_names_is_in_the_compose_file_and_back() -> None:
    named = readme_services()
    assert named >= STACK, f"the README's Docker section does not name {STACK - named}"
    services = compose_services()
    assert named <= services, f"the README names services compose does not have: {named - services}"
    assert services <= named, f"the README does not name these services: {services - named}"
