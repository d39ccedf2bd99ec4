"""A real stack for tests: a throwaway database and AMQP prefix, the API and workers as processes.

Nothing is faked: the API runs under gunicorn, the workers are real Celery
worker processes consuming from RabbitMQ, and the database is PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
from kombu import Connection

from billing.adapters.database import ensure_database, make_engine
from billing.adapters.events import Topology
from billing.adapters.migrate import upgrade
from billing.config import Settings

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".test-logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings() -> Settings:
    suffix = uuid.uuid4().hex[:10]
    base = Settings.from_env()
    database = base.database_url.rsplit("/", 1)[0] + f"/billing_test_{suffix}"
    return Settings(
        database_url=database,
        broker_url=base.broker_url,
        api_tokens=(f"test-token-{suffix}", "second-token-of-the-session"),
        amqp_prefix=f"test{suffix}",
        flower_auth="admin:secret",
    )


def environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BILLING_DATABASE_URL=settings.database_url,
        BILLING_BROKER_URL=settings.broker_url,
        BILLING_API_TOKENS=",".join(settings.api_tokens),
        BILLING_AMQP_PREFIX=settings.amqp_prefix,
        BILLING_FLOWER_AUTH=settings.flower_auth,
        BILLING_RESPONSES_MAX_EVENTS=str(settings.responses_max_events),
        BILLING_RESPONSES_MAX_BYTES=str(settings.responses_max_bytes),
        BILLING_METRICS_DIR=str(LOGS / f"metrics-{settings.amqp_prefix}"),
        PYTHONUNBUFFERED="1",
    )
    return env


def prepare_database(settings: Settings) -> None:
    ensure_database(settings.database_url)
    upgrade(settings.database_url)


def drop_database(settings: Settings) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    admin.dispose()


def delete_amqp_entities(settings: Settings) -> None:
    """Remove the test run's queues and exchanges from the shared broker."""
    topology = Topology(settings)
    name = settings.amqp_name
    with Connection(settings.broker_url) as connection:
        channel = connection.channel()
        for queue in (
            name("billing.tasks"),
            name("billing.results"),
            name("billing.periodic"),
            name("billing.tasks.dead"),
            name("billing.responses"),
            name("billing.requests.dead"),
            name("billing.requests"),
        ):
            try:
                channel.queue_delete(queue)
            except Exception:
                channel = connection.channel()
        for exchange in (
            topology.events.name,
            topology.requests.name,
            name("billing.tasks"),
            name("billing.tasks.dead"),
            name("billing.requests.dead"),
            name("billing.celeryev"),
            f"{name('billing')}.pidbox",
            f"reply.{name('billing')}.pidbox",
        ):
            try:
                channel.exchange_delete(exchange)
            except Exception:
                channel = connection.channel()


class Process:
    """A child process whose output goes to a log file under .test-logs/.

    `stop_signal` is what `terminate` and `stop` send: SIGTERM (a warm
    shutdown) unless the process says otherwise.
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        LOGS.mkdir(exist_ok=True)
        self.name = name
        self.stop_signal = stop_signal
        self.log_path = LOGS / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()

    def terminate(self) -> None:
        """Ask for a shutdown (`stop_signal`) without waiting for it."""
        if self.alive():
            self.popen.send_signal(self.stop_signal)

    def stop(self) -> None:
        if self.alive():
            try:
                self.popen.send_signal(self.stop_signal)
                self.popen.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        self._log.close()


def stop_all(processes: Iterable[Process]) -> None:
    """Stop every process, all at once: each is asked first, then each is waited for."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


def discard_all(processes: Iterable[Process]) -> None:
    """Kill every process of a stack being thrown away, whose shutdown nobody checks.

    A warm shutdown of even an idle Celery worker takes about 2.5 s; the
    stack's database and queues are deleted right after, so nothing a
    process had in hand matters any more.
    """
    for process in processes:
        process.kill()


def start_api(settings: Settings, port: int) -> Process:
    """gunicorn serving the API; `stop` is its quick shutdown (SIGINT).

    A test's stack is thrown away when it stops, and gunicorn's graceful
    shutdown (SIGTERM) waits out its whole graceful timeout (10 s) for the
    test clients' idle keep-alive connections.
    """
    command = [sys.executable, "-m", "billing.cli", "api", "--port", str(port), "--workers", "2"]
    process = Process(
        f"api-{settings.amqp_prefix}", command, environment(settings), stop_signal=signal.SIGINT
    )
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "the API to start")
    return process


def start_worker(
    settings: Settings,
    name: str,
    concurrency: int = 2,
    wait: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Process:
    command = [
        sys.executable,
        "-m",
        "billing.cli",
        "worker",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}-{settings.amqp_prefix}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
    ]
    env = {**environment(settings), **(extra_env or {})}
    process = Process(f"{name}-{settings.amqp_prefix}", command, env)
    if wait:
        wait_ready(process)
    return process


def wait_ready(worker: Process) -> None:
    wait_until(
        lambda: "ready." in worker.log_path.read_text(errors="replace"),
        60,
        f"{worker.name} to be ready",
    )


def start_beat(settings: Settings) -> Process:
    command = [sys.executable, "-m", "billing.cli", "beat"]
    return Process(f"beat-{settings.amqp_prefix}", command, environment(settings))


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


class Client:
    """A thin HTTP client for the API with the test token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        """POST, sent once more if the connection broke first, as a client of this API may.

        Every POST the tests send is safe to repeat (an operation id, an
        account's own id); a pooled keep-alive connection may be closed by
        the server just as a request goes out on it.
        """
        try:
            return self.session.post(self.base_url + path, json=body, timeout=30, **kwargs)
        except requests.ConnectionError:
            return self.session.post(self.base_url + path, json=body, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=60, **kwargs)

    def create_account(
        self, account_id: str, currency: str = "USD", **extra: Any
    ) -> dict[str, Any]:
        response = self.post(
            "/v1/accounts", {"account_id": account_id, "currency": currency, **extra}
        )
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def submit(self, kind: str, body: dict[str, Any]) -> requests.Response:
        return self.post(f"/v1/{kind}", body)

    def wait(
        self, operation_id: str, timeout_s: float = 30, *, may_be_unknown: bool = False
    ) -> dict[str, Any]:
        """The operation once terminal; `may_be_unknown` tolerates a 404 while it is in flight."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.get(f"/v1/operations/{operation_id}", params={"wait": 10})
            if response.status_code == 404 and may_be_unknown and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            assert response.status_code == 200, response.text
            body = dict(response.json())
            if body["status"] != "pending" or time.monotonic() > deadline:
                return body

    def run(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Submit an operation and wait for its outcome."""
        response = self.submit(kind, body)
        assert response.status_code == 202, response.text
        return self.wait(body["operation_id"])

    def account(self, account_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


class EventLog:
    """Every event that reached the test run's `billing.responses` queue, by message_id."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def drain(self) -> None:
        queue = Topology(self._settings).responses
        with self._lock, Connection(self._settings.broker_url) as connection:
            simple = connection.SimpleQueue(queue, no_ack=False)
            try:
                while True:
                    try:
                        message = simple.get(block=True, timeout=0.2)
                    except simple.Empty:
                        break
                    self.messages.append(
                        {
                            "routing_key": message.delivery_info["routing_key"],
                            "message_id": message.properties.get("message_id"),
                            "delivery_mode": message.properties.get("delivery_mode"),
                            "content_type": message.content_type,
                            "body": json.loads(message.body),
                        }
                    )
                    message.ack()
            finally:
                simple.close()

    def by_id(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for message in self.messages:
            grouped.setdefault(message["message_id"], []).append(message)
        return grouped

    def wait_for(
        self, message_ids: Iterable[str], timeout_s: float = 60
    ) -> dict[str, list[dict[str, Any]]]:
        wanted = set(message_ids)

        def all_there() -> bool:
            self.drain()
            return wanted <= set(self.by_id())

        wait_until(all_there, timeout_s, f"events for {len(wanted)} operations", interval_s=0.1)
        return {k: v for k, v in self.by_id().items() if k in wanted}


def engine_for(settings: Settings) -> Any:
    return make_engine(settings.database_url)
