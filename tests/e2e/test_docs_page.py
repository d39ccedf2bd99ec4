"""The pages a person opens, in headless Chromium with the network cut off but for this machine.

`/docs` must render the API's operations from assets the service serves
itself, and Flower must show, behind its login, a task this test just ran.

Chromium runs once per page with `--dump-dom`: it loads the page, lets its
scripts run for a budget of virtual time, and prints the DOM they built. That
needs nothing but Debian's `chromium` (no driver, no Python package), and it
is enough here: both pages only need loading, not clicking.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from billing.config import Settings
from tests.support import stack

RENDER_TIMEOUT_S = 90
# Scripts get this much virtual time to fetch and render before the DOM is taken.
SCRIPT_BUDGET_MS = 8_000


def render(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built for the page, and every URL the browser requested."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `apt-get install chromium` (.ci/run does)"
    net_log = profile / "net-log.json"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        # No name resolves but 127.0.0.1, and anything not on loopback goes to a proxy
        # that is not there: the page gets only what the service itself serves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{stack.free_port()}",
        f"--log-net-log={net_log}",
        f"--virtual-time-budget={SCRIPT_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, requested_urls(net_log)


def requested_urls(net_log: Path) -> list[str]:
    """The http(s) URLs in Chromium's net log, the page's requests and the browser's own."""
    text = net_log.read_text(errors="replace")
    return sorted(set(re.findall(r'"(?:url|original_url)":"(https?://[^"]+)"', text)))


def same_origin(url: str, origin: str) -> bool:
    parts, expected = urlsplit(url), urlsplit(origin)
    return (parts.hostname, parts.port) == (expected.hostname, expected.port)


def listed_operations(dom: str) -> set[tuple[str, str]]:
    """(method, path) of every operation block Swagger UI rendered."""
    blocks = re.findall(r'class="opblock opblock-(\w+)[^"]*".*?data-path="([^"]+)"', dom, re.S)
    return {(method, path) for method, path in blocks}


def test_the_docs_page_lists_every_operation_with_only_the_service_reachable(
    api_url: str, tmp_path: Path
) -> None:
    page = requests.get(f"{api_url}/docs/", timeout=10).text
    assert not re.search(r'(?:src|href)="(?!/)', page), "the page loads something from elsewhere"
    document = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    expected = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert ("post", "/v1/transfers") in expected

    dom, urls = render(f"{api_url}/docs", tmp_path)

    assert "Billing service" in dom
    assert expected <= listed_operations(dom), expected - listed_operations(dom)
    page_urls = [url for url in urls if same_origin(url, api_url)]
    assert any(url.endswith("/swagger-ui-bundle.js") for url in page_urls)
    assert any(url.endswith("/openapi.json") for url in page_urls)


@pytest.fixture
def flower(settings: Settings, workers: Any) -> Iterator[str]:
    """`billing flower` on a free port, stopped at the end of the test."""
    port = stack.free_port()
    command = [sys.executable, "-m", "billing.cli", "flower", "--port", str(port)]
    process = stack.Process(f"flower-{settings.amqp_prefix}", command, stack.environment(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until(lambda: _answers(f"{url}/healthcheck"), 30, "Flower to start")
        yield url
    finally:
        process.stop()
    assert not process.alive()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _flower_json(url: str, auth: tuple[str, str]) -> Any:
    response = requests.get(url, auth=auth, timeout=10)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def test_flower_behind_its_login_shows_a_task_the_test_just_ran(
    flower: str, settings: Settings, client: stack.Client, new_id: Any, tmp_path: Path
) -> None:
    user, _, password = settings.flower_auth.partition(":")
    auth = (user, password)
    assert requests.get(f"{flower}/tasks", timeout=10).status_code == 401
    assert requests.get(f"{flower}/tasks", auth=(user, "wrong"), timeout=10).status_code == 401
    # Flower learns of tasks from the workers' events, from when it listens on:
    # wait until it has heard the session's workers before running the task.
    stack.wait_until(
        lambda: any(
            settings.amqp_prefix in worker.get("hostname", "")
            for worker in _flower_json(f"{flower}/workers?json=1", auth)["data"]
        ),
        30,
        "Flower to hear the workers' events",
        interval_s=0.5,
    )
    account_id = new_id("flower-account")
    client.create_account(account_id)

    def ledger_task(operation_id: str) -> str | None:
        """The uuid of the ledger task that applied the operation, once Flower saw it succeed."""
        tasks = _flower_json(f"{flower}/api/tasks?limit=1000", auth)
        for uuid, task in tasks.items():
            # The result task that publishes its events carries the id too: not that one.
            ledger = str(task.get("name") or "").startswith("billing.apply_operation")
            if ledger and operation_id in (task.get("args") or "") and task["state"] == "SUCCESS":
                return str(uuid)
        return None

    # The workers send task events once Flower has turned them on (it sends
    # Celery's enable_events every 5 s from its start): a credit applied
    # before that never shows, so credit again until Flower shows one.
    seen: list[str] = []
    credits: list[str] = []

    def a_credit_shows() -> bool:
        operation_id = new_id(f"flower-credit-{len(credits)}")
        credits.append(operation_id)
        outcome = client.run(
            "credits", {"operation_id": operation_id, "account_id": account_id, "amount": 700}
        )
        assert outcome["status"] == "succeeded", outcome
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if (task := ledger_task(operation_id)) is not None:
                seen.append(task)
                return True
            time.sleep(0.5)
        return False

    stack.wait_until(a_credit_shows, 45, "Flower to show a credit's ledger task", interval_s=0)
    task_id = seen[0]

    # Logged in with the credentials in the URL; the table's rows come from
    # /tasks/datatable, which the page's script loads under the same login.
    logged_in = flower.replace("http://", f"http://{user}:{password}@", 1)
    dom, urls = render(f"{logged_in}/tasks?name=billing.apply_operation&state=SUCCESS", tmp_path)

    assert any(url.endswith("/tasks/datatable") for url in urls)
    rows = re.findall(r'<tr id="([^"]+)"[^>]*>(.*?)</tr>', dom, re.S)
    row = dict(rows).get(str(task_id))
    assert row is not None, f"task {task_id} is not on Flower's tasks page: {[r[0] for r in rows]}"
    assert re.search(r">billing\.apply_operations?<", row)
    assert "SUCCESS" in row
