"""`billing up` run as a newcomer runs it: its environment, and the lines it prints as they come."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from tests.support import stack

BILLING = [sys.executable, "-m", "billing.cli"]


def up_environment(database_url: str, broker_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `billing up` with a prefix of its own and no token given."""
    env = dict(os.environ)
    for name in ("BILLING_API_TOKENS", "BILLING_FLOWER_AUTH"):
        env.pop(name, None)
    env.update(
        BILLING_DATABASE_URL=database_url,
        BILLING_BROKER_URL=broker_url,
        BILLING_AMQP_PREFIX=f"up{uuid.uuid4().hex[:8]}",
        BILLING_METRICS_DIR=str(tmp_path / "metrics"),
        PYTHONUNBUFFERED="1",
    )
    return env


class Output:
    """The lines a running `billing up` prints, read by a thread as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        self._stdout = process.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            self._queue.put(line)

    def wait_for(self, text: str, timeout_s: float) -> int:
        """The index of the first line that contains `text`, waiting up to `timeout_s`."""
        for index, line in enumerate(self.lines):
            if text in line:
                return index
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no {text!r} in:\n{''.join(self.lines)}") from None
            self.lines.append(line)
            if text in line:
                return len(self.lines) - 1


def start_up(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], Output]:
    """`billing up` with these arguments, from the project's root, its output read as it comes."""
    process = subprocess.Popen(
        [*BILLING, "up", *args],
        env=env,
        cwd=stack.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return process, Output(process)


def stop_up(process: subprocess.Popen[str]) -> None:
    """Ctrl-C, as its user stops it; killed if it has not stopped within a minute."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
