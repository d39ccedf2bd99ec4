"""`billing up` as a newcomer meets it: a missing PostgreSQL or RabbitMQ, a broker that comes late.

Each test runs the real command in a subprocess. A missing service is a port
nobody listens on; a late broker is a throwaway RabbitMQ node started only
after `billing up` said it is waiting for it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from billing.config import Settings
from billing_client import Client
from tests.support import stack
from tests.support.throwaway import ThrowawayRabbit
from tests.support.up import BILLING, start_up, stop_up, up_environment


def test_billing_up_without_postgresql_and_rabbitmq_says_what_is_missing_and_how_to_get_it(
    tmp_path: Path,
) -> None:
    database_port, broker_port = stack.free_port(), stack.free_port()
    env = up_environment(
        f"postgresql+psycopg2://postgres:pg-secret@127.0.0.1:{database_port}/billing",
        f"amqp://guest:mq-secret@127.0.0.1:{broker_port}//",
        tmp_path,
    )
    done = subprocess.run(
        [*BILLING, "up", "--wait-for-services", "1", "--log-dir", str(tmp_path / "logs")],
        env=env,
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert "pg-secret" not in output and "mq-secret" not in output
    assert (
        f"PostgreSQL does not answer at postgresql+psycopg2://postgres:***@127.0.0.1:{database_port}/billing"
        in output
    )
    assert f"RabbitMQ does not answer at amqp://guest:**@127.0.0.1:{broker_port}//" in output
    assert "apt-get install postgresql" in output
    assert "apt-get install rabbitmq-server" in output
    assert "docker compose" in output and "billing up --services" in output
    assert "export BILLING_DATABASE_URL=" in output
    assert "export BILLING_BROKER_URL=" in output
    assert "started" not in output, "nothing may start before the preflight passes"


@pytest.fixture
def late_rabbit() -> Iterator[ThrowawayRabbit]:
    rabbit = ThrowawayRabbit(f"late{uuid.uuid4().hex[:6]}", stack.free_port(), stack.free_port())
    yield rabbit
    rabbit.remove()


def test_billing_up_waits_for_a_late_broker_and_prints_the_banner_only_when_it_all_answers(
    tmp_path: Path, late_rabbit: ThrowawayRabbit
) -> None:
    database_url = stack.make_settings().database_url
    env = up_environment(database_url, late_rabbit.url, tmp_path)
    api_port, flower_port = stack.free_port(), stack.free_port()
    args = ["--port", str(api_port), "--flower-port", str(flower_port)]
    args += ["--log-dir", str(tmp_path / "logs"), "--wait-for-services", "240"]
    process, output = start_up(args, env)
    try:
        waiting = output.wait_for("for RabbitMQ at amqp://guest:**@127.0.0.1", 60)
        late_rabbit.start()
        assert not any("billing is up" in line for line in output.lines)
        answered = output.wait_for("RabbitMQ answers", 60)
        banner = output.wait_for("billing is up", 180)
        assert waiting < answered < banner
        assert any("worker: started" in line for line in output.lines[answered:banner])
        token = output.lines[output.wait_for("token:", 5)].split()[-1]
        # Up means up: at the banner the API is ready and a worker applies operations.
        ready = requests.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        # Closed before Ctrl-C: an idle keep-alive connection would hold the
        # API's graceful stop for its whole timeout.
        with Client(f"http://127.0.0.1:{api_port}", token) as client:
            client.create_account("alice", "EUR")
            credit = client.credit("alice", 500)
            assert client.wait(credit.operation_id, 60).succeeded
    finally:
        stop_up(process)
        stack.drop_database(Settings(database_url=database_url))
    assert process.returncode == 0, "".join(output.lines)
    assert (tmp_path / "logs" / "worker.log").read_text(errors="replace").strip()
