"""Pieces of `billing up`: the compose file that starts a missing data store, the supervisor.

The end-to-end behaviour (a missing service, a late broker) is in
tests/e2e/test_up.py; these check what that cannot reach on a machine
without a Docker engine, and a process's restart.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from billing.adapters import compose
from billing.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_environment_takes_ports_and_users_from_the_configured_urls() -> None:
    env = compose.compose_environment(
        "postgresql+psycopg2://ledger:pw@127.0.0.1:6543/billing",
        "amqp://shop:s3cret@localhost:5673//",
    )
    assert env["BILLING_POSTGRES_PORT"] == "6543" and env["BILLING_POSTGRES_USER"] == "ledger"
    assert env["BILLING_RABBITMQ_PORT"] == "5673"
    assert (env["BILLING_RABBITMQ_USER"], env["BILLING_RABBITMQ_PASSWORD"]) == ("shop", "s3cret")


def test_the_services_file_publishes_each_store_on_this_machine_at_the_urls_port() -> None:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.skip("docker-compose is missing: `apt-get install docker-compose` (.ci/run does)")
    env = compose.compose_environment(
        "postgresql+psycopg2://postgres@127.0.0.1:6543/billing",
        "amqp://guest:guest@127.0.0.1:5673//",
    )
    done = subprocess.run(
        [
            executable,
            "--project-name",
            compose.PROJECT,
            "--file",
            str(ROOT / compose.COMPOSE_FILE),
            "--file",
            str(ROOT / compose.SERVICES_FILE),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1:6543:5432" in done.stdout
    assert "127.0.0.1:5673:5672" in done.stdout
    assert "POSTGRES_HOST_AUTH_METHOD: trust" in done.stdout
    assert "RABBITMQ_DEFAULT_USER: guest" in done.stdout


def test_a_process_that_exits_is_reported_with_its_status_and_started_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crash = [sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"]
    supervisor = Supervisor({"crasher": crash}, {}, tmp_path, tmp_path / "logs")
    supervisor.start_all()
    (child,) = supervisor.children
    deadline = time.monotonic() + 30
    while not (child.restarts == 1 and child.start_again_at is None):
        assert supervisor.tend()
        assert time.monotonic() < deadline, capsys.readouterr()
        time.sleep(0.05)
    supervisor.stop_all()
    output = capsys.readouterr()
    log = tmp_path / "logs" / "crasher.log"
    assert "crasher: started (pid" in output.out and str(log) in output.out
    assert "crasher: exited with status 3; starting it again in 1 s (restart 1 of 5)" in output.err
    assert "crasher: started again" in output.out
    assert log.read_text().count("about to fail") >= 1
