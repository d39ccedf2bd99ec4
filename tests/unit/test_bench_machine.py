"""The bench's CPU by component: which process is which, and what each spent between two reads."""

from __future__ import annotations

import os

from bench import machine
from bench.machine import Snapshot, component_of, usage


def test_processes_are_told_apart_by_their_command_lines() -> None:
    bench = 4242
    seen = {
        "/srv/.venv/bin/python -m gunicorn --workers 2 api.wsgi:app": "api",
        "/srv/.venv/bin/python -m celery -A tasks worker --concurrency 4": "worker",
        "/srv/.venv/bin/python -m celery -A tasks beat --scheduler celery.beat:Scheduler": "beat",
        "/srv/.venv/bin/python -m celery -A tasks flower --port=5555": "other",
        "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main": "postgresql",
        "postgres: 15/main: postgres billing 127.0.0.1(5432) idle": "postgresql",
        "/usr/lib/erlang/erts-12.2/bin/beam.smp -W w -- -root /usr/lib/erlang": "rabbitmq",
        "/usr/bin/python3 /usr/bin/psql -h 127.0.0.1": "other",
        "": "other",
    }
    for command_line, component in seen.items():
        assert component_of(command_line, 1, bench) == component, command_line
    assert component_of("/srv/.venv/bin/python /srv/.venv/bin/billing bench", bench, bench) == (
        "bench"
    )


def test_usage_counts_what_each_process_spent_between_the_reads() -> None:
    before = Snapshot(
        {1: ("api", 10.0), 2: ("worker", 5.0), 3: ("worker", 7.0), 9: ("other", 50.0)},
        busy_s=100.0,
        interrupts_s=1.0,
        total_s=400.0,
    )
    after = Snapshot(
        # 3 ended; 4 started meanwhile; 9 is a new process the kernel gave an old pid.
        {1: ("api", 12.5), 2: ("worker", 6.0), 4: ("worker", 0.5), 9: ("other", 0.25)},
        busy_s=104.0,
        interrupts_s=1.5,
        total_s=408.0,
    )
    spent = usage(before, after)
    assert spent is not None
    assert spent["api"] == 2.5
    assert spent["worker"] == 1.5
    assert spent["other"] == 0.25
    assert spent["postgresql"] == spent["rabbitmq"] == spent["bench"] == 0.0
    assert (spent["interrupts"], spent["machine"], spent["machine_total"]) == (0.5, 4.0, 8.0)
    assert usage(None, after) is None


def test_a_snapshot_of_this_machine_finds_this_process_as_the_bench() -> None:
    snapshot = machine.snapshot()
    assert snapshot is not None  # the tests run on Linux
    component, cpu_s = snapshot.by_process[os.getpid()]
    assert component == "bench" and cpu_s > 0
    assert 0 < snapshot.busy_s <= snapshot.total_s
