"""Throwaway PostgreSQL clusters and RabbitMQ nodes that a fault test may restart at will.

The shared services on the standard ports are never stopped by a test; a
fault test gets instances of its own on other ports, and removes them after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def _run(command: list[str], env: dict[str, str] | None = None, timeout_s: float = 120) -> str:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}\n{result.stderr}")
    return result.stdout


class ThrowawayPostgres:
    """A Debian cluster of its own (`pg_createcluster`), trust auth, on `port`."""

    version = "15"

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/billing"

    def create(self) -> None:
        _run(
            [
                "pg_createcluster",
                self.version,
                self.name,
                "-p",
                str(self.port),
                "--",
                "--auth=trust",
            ]
        )
        self.start()

    def start(self) -> None:
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, "start"])
        self._wait_ready()

    def stop(self) -> None:
        _run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                self.version,
                self.name,
                "stop",
                "-m",
                "fast",
            ]
        )

    def restart(self) -> None:
        _run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                self.version,
                self.name,
                "restart",
                "-m",
                "fast",
            ]
        )
        self._wait_ready()

    def drop(self) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, check=False
        )

    def _wait_ready(self) -> None:
        for _ in range(100):
            ready = subprocess.run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on {self.port} did not become ready")


class ThrowawayRabbit:
    """A RabbitMQ node of its own (its own node name, ports and data directory)."""

    def __init__(self, name: str, port: int, dist_port: int, config: str = "") -> None:
        self.node = f"{name}@localhost"
        self.port = port
        self.dist_port = dist_port
        self.base = Path(tempfile.mkdtemp(prefix=f"rabbit-{name}-"))
        (self.base / "plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"loopback_users = none\nlisteners.tcp.default = {port}\n{config}"
        )
        self.base.chmod(0o755)
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for child in self.base.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")
        self.env = dict(os.environ)
        self.env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        _run(["rabbitmq-server", "-detached"], env=self.env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["rabbitmqctl", "-n", self.node, "await_startup", "--timeout", "30"],
                env=self.env,
                capture_output=True,
                check=False,
                timeout=60,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"RabbitMQ node {self.node} did not start")

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=120,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, as a crash or the OOM killer would."""
        pid = int((self.base / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _dead(pid):
                return
            time.sleep(0.02)
        raise TimeoutError(f"RabbitMQ node {self.node} (pid {pid}) outlived SIGKILL")

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        """`rabbitmqctl -n NODE ...`; its output, or RuntimeError when it fails."""
        return _run(["rabbitmqctl", "-n", self.node, *args], env=self.env, timeout_s=timeout_s)

    def remove(self) -> None:
        """Kill the node if it runs (its data goes with it: nothing to stop cleanly), delete it.

        A clean `rabbitmqctl stop` of a node with queues takes seconds of the
        suite for a node nobody will read again.
        """
        if self._running_pid() is not None:
            self.kill()
        else:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _running_pid(self) -> int | None:
        """The pid of this node's Erlang VM if it runs (the pid file may be left from before)."""
        try:
            pid = int((self.base / "pid").read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.base).encode() in environ else None


def _dead(pid: int) -> bool:
    """Gone, or a zombie: dead, with its ports closed, but not yet reaped.

    The detached node's parent is this machine's init, which reaps its
    children only about a second later.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"
