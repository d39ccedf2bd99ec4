"""docker-compose.cluster.yml: three RabbitMQ nodes, every process naming all three, workers spread.

Checked with `docker-compose config` over both files, as an operator runs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
REQUIRED_VARIABLES = {
    "BILLING_API_TOKENS": "a-token",
    "BILLING_FLOWER_AUTH": "admin:secret",
    "RABBITMQ_ERLANG_COOKIE": "a-cookie",
    "POSTGRES_PASSWORD": "a-superuser-password",
    "BILLING_DB_PASSWORD": "a-service-password",
    "RABBITMQ_PASSWORD": "a-broker-password",
}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: `apt-get install docker-compose` (.ci/run does)"
    files = ["--file", str(ROOT / "docker-compose.yml")]
    files += ["--file", str(ROOT / "docker-compose.cluster.yml")]
    return subprocess.run(
        [executable, *files, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def cluster_config() -> dict[str, Any]:
    done = compose("config", env={**os.environ, **REQUIRED_VARIABLES})
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def broker_nodes(service: dict[str, Any]) -> list[str]:
    """The hosts of the service's BILLING_BROKER_URL, in order."""
    urls = service["environment"]["BILLING_BROKER_URL"].split(";")
    return [url.split("@", 1)[1].split(":", 1)[0] for url in urls]


def test_the_cluster_file_runs_three_nodes_sharing_one_cookie_and_pausing_a_minority() -> None:
    services = cluster_config()["services"]
    for node in NODES:
        assert services[node]["environment"]["RABBITMQ_ERLANG_COOKIE"] == "a-cookie"
        assert any("20-cluster.conf" in str(volume) for volume in services[node]["volumes"])
    conf = (ROOT / "deploy" / "rabbitmq-cluster.conf").read_text()
    assert "cluster_partition_handling = pause_minority" in conf
    for i, node in enumerate(NODES, 1):
        assert f"cluster_formation.classic_config.nodes.{i} = rabbit@{node}" in conf
        hostname = services[node].get("hostname")
        assert hostname == node, f"{node} must have the hostname its node name is made of"


def test_every_process_names_all_three_nodes_and_the_workers_start_at_different_ones() -> None:
    services = cluster_config()["services"]
    users = {name: s for name, s in services.items() if "BILLING_BROKER_URL" in s["environment"]}
    assert {"api", "worker", "worker-2", "worker-3", "beat", "flower"} <= set(users)
    for name, service in users.items():
        assert sorted(broker_nodes(service)) == sorted(NODES), name
        depends = service.get("depends_on", {})
        if name != "migrate":
            assert set(NODES) <= set(depends), f"{name} starts before the cluster"
    workers = [name for name in users if name.startswith("worker")]
    assert {broker_nodes(users[name])[0] for name in workers} == set(NODES)


def test_the_cluster_file_refuses_to_run_without_the_erlang_cookie() -> None:
    env = {**os.environ, **REQUIRED_VARIABLES}
    del env["RABBITMQ_ERLANG_COOKIE"]
    done = compose("config", "--quiet", env=env)
    assert done.returncode != 0
    assert "RABBITMQ_ERLANG_COOKIE" in done.stderr


def test_every_process_of_the_cluster_connects_to_postgresql_as_the_services_own_role() -> None:
    services = cluster_config()["services"]
    users = {
        n: s for n, s in services.items() if "BILLING_DATABASE_URL" in s.get("environment", {})
    }
    assert {"worker-2", "worker-3"} <= set(users)
    for name, service in users.items():
        url = service["environment"]["BILLING_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg2://billing:a-service-password@"), name


def test_the_cluster_file_has_no_default_for_a_secret() -> None:
    text = (ROOT / "docker-compose.cluster.yml").read_text()
    for secret in ("RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", "BILLING_DB_PASSWORD"):
        assert f"${{{secret}:-" not in text, secret
