"""No secret in a process list: Flower's login and the broker password stay out of `ps`.

Any local user can read every process's arguments (/proc/<pid>/cmdline), so
secrets go to Flower through its environment; the test starts the real
processes and reads their arguments back.
"""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from billing.config import Settings
from tests.support import stack

BROKER_CREDENTIALS = "guest:guest@"  # the session broker's user and password, as a URL holds them


@pytest.fixture
def flower_settings(settings: Settings) -> Settings:
    password = f"flower-{uuid.uuid4().hex}"
    return Settings(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        api_tokens=settings.api_tokens,
        amqp_prefix=settings.amqp_prefix,
        flower_auth=f"admin:{password}",
    )


def arguments(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def descendants(pid: int) -> Iterator[int]:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        yield int(child)
        yield from descendants(int(child))


def answers(url: str, **kwargs: object) -> bool:
    try:
        return requests.get(url, timeout=1, **kwargs).status_code < 500  # type: ignore[arg-type]
    except requests.RequestException:
        return False


def assert_no_secret(pid: int, settings: Settings) -> None:
    password = settings.flower_auth.partition(":")[2]
    command_line = arguments(pid)
    assert password not in command_line, command_line
    assert BROKER_CREDENTIALS not in command_line, command_line


def test_billing_flower_keeps_its_login_and_the_broker_password_out_of_its_arguments(
    flower_settings: Settings,
) -> None:
    port = stack.free_port()
    command = [sys.executable, "-m", "billing.cli", "flower", "--port", str(port)]
    flower = stack.Process(
        f"flower-{flower_settings.amqp_prefix}", command, stack.environment(flower_settings)
    )
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: answers(f"{url}/healthcheck"), 60, "Flower to start")

        assert_no_secret(flower.pid, flower_settings)
        # The login still reaches Flower: refused without it, let in with it.
        assert requests.get(url, timeout=10).status_code == 401
        user, _, password = flower_settings.flower_auth.partition(":")
        assert requests.get(url, auth=(user, password), timeout=10).status_code == 200
    finally:
        flower.stop()


def test_billing_up_starts_no_process_with_a_secret_in_its_arguments(
    flower_settings: Settings, tmp_path: Path
) -> None:
    api_port, flower_port = stack.free_port(), stack.free_port()
    command = [
        sys.executable,
        "-m",
        "billing.cli",
        "up",
        "--port",
        str(api_port),
        "--flower-port",
        str(flower_port),
        "--concurrency",
        "1",
    ]
    env = {**stack.environment(flower_settings), "BILLING_METRICS_DIR": str(tmp_path)}
    up = stack.Process(f"up-{flower_settings.amqp_prefix}", command, env)
    try:
        flower_url = f"http://127.0.0.1:{flower_port}/healthcheck"
        stack.wait_until(lambda: answers(flower_url), 90, "Flower under billing up to start")
        stack.wait_until(lambda: len(list(descendants(up.pid))) >= 4, 30, "every child")

        for pid in [up.pid, *descendants(up.pid)]:
            assert_no_secret(pid, flower_settings)
    finally:
        up.popen.send_signal(signal.SIGINT)
        up.stop()
