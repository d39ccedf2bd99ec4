"""Fixtures: one real stack (database, broker prefix, API, three workers) per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from billing.config import Settings
from tests.support import stack


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    settings = stack.make_settings()
    stack.prepare_database(settings)
    yield settings
    stack.drop_database(settings)
    stack.delete_amqp_entities(settings)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Any]:
    engine = stack.engine_for(settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    port = stack.free_port()
    process = stack.start_api(settings, port)
    yield f"http://127.0.0.1:{port}"
    process.stop()


class Workers:
    """The session's worker processes; tests may kill one and start a replacement."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[stack.Process] = []
        self._started = 0

    def start(self, concurrency: int = 2, wait: bool = True) -> stack.Process:
        """Start another worker; with `wait=False`, the caller waits for it (`stack.wait_ready`)."""
        self._started += 1
        process = stack.start_worker(self.settings, f"w{self._started}", concurrency, wait)
        self.processes.append(process)
        return process

    def discard_all(self) -> None:
        """At the end of the session, with the stack thrown away (`stack.discard_all`)."""
        stack.discard_all(self.processes)


@pytest.fixture(scope="session")
def workers(settings: Settings) -> Iterator[Workers]:
    pool = Workers(settings)
    for i in range(3):
        pool.processes.append(stack.start_worker(settings, f"w{i + 1}", 2, wait=False))
    pool._started = 3
    for process in pool.processes:
        stack.wait_ready(process)
    yield pool
    pool.discard_all()


@pytest.fixture(scope="session")
def client(settings: Settings, api_url: str, workers: Workers) -> stack.Client:
    return stack.Client(api_url, settings.api_tokens[0])


@pytest.fixture(scope="session")
def events(settings: Settings, workers: Workers) -> stack.EventLog:
    return stack.EventLog(settings)


@pytest.fixture
def new_id() -> Any:
    """Unique ids per test, so tests sharing the session's stack never collide."""
    run = uuid.uuid4().hex[:8]

    def make(name: str) -> str:
        return f"{name}-{run}"

    return make


# Test files that run processes of their own (`billing up`, a worker on a throwaway
# RabbitMQ node) beside no stack of the session's, and spend most of their
# time waiting for them to start. `make test` runs them in a pytest-xdist
# process of their own, beside the rest (which share the session's stack), so
# those waits overlap the other tests instead of adding to them. Not
# test_cluster.py: beside the other lane its partition healed slowly or not
# at all (2026-12-07, a 2-core machine). It runs last in the main lane, by
# when the other lane has long finished.
OWN_STACK_FILES = frozenset(
    {"test_up.py", "test_readme.py", "test_process_secrets.py", "test_hostile_x_death.py"}
)
LAST_FILES = frozenset({"test_cluster.py"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in LAST_FILES)
    for item in items:
        lane = "own-stacks" if item.path.name in OWN_STACK_FILES else "session-stack"
        item.add_marker(pytest.mark.xdist_group(lane))


_METRICS: dict[str, str] = {}


@pytest.fixture
def metrics(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Figures a test measured, printed at the end of the run (throughput and the like).

    They travel with the test's report, so the run prints them whichever
    pytest-xdist process ran the test.
    """
    measured: dict[str, str] = {}
    yield measured
    request.node.user_properties.extend(("measured", item) for item in measured.items())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _METRICS.update(value for name, value in report.user_properties if name == "measured")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _METRICS:
        terminalreporter.section("measured")
        for name, value in _METRICS.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def beat(settings: Settings, workers: Workers) -> Iterator[stack.Process]:
    """Celery beat for the periodic jobs (hold expiry, outbox relay, recovery sweep)."""
    process = stack.start_beat(settings)
    yield process
    process.stop()
