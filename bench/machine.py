"""The machine a run measured: what it is, and the CPU its processes spent, from Linux's /proc.

When the service runs on the machine the bench runs on (the benchmark's
setting: everything on two cores), the CPU each component took per
completed operation tells where the time goes, and whether a slower run
did more work or ran on a slower machine: every component costing more in
the same proportion is the machine. Elsewhere (no /proc) there is nothing
to report, and the report says so.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
COMPONENTS = ("api", "worker", "beat", "postgresql", "rabbitmq", "bench", "other")
# /proc/stat's first line: user, nice, system, idle, iowait, irq, softirq, steal.
_IDLE, _IOWAIT, _IRQ, _SOFTIRQ, _STEAL = 3, 4, 5, 6, 7


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds used so far: by process (component, seconds), and by the whole machine."""

    by_process: dict[int, tuple[str, float]]
    busy_s: float
    # Interrupt handling (the loopback traffic between the components, mostly),
    # which /proc/stat counts for the machine but no process's figures include.
    interrupts_s: float
    total_s: float


def component_of(command_line: str, pid: int, bench_pid: int) -> str:
    """Which part of the deployment a process is, from its command line."""
    if pid == bench_pid:
        return "bench"
    words = command_line.split()
    if "celery" in command_line or "billing worker" in command_line:
        if "flower" in words:
            return "other"
        return "beat" if "beat" in words else "worker"
    if "gunicorn" in command_line or "billing api" in command_line:
        return "api"
    if words and os.path.basename(words[0]).startswith("postgres"):
        return "postgresql"
    if "beam.smp" in command_line or "rabbitmq" in command_line:
        return "rabbitmq"
    return "other"


def snapshot() -> Snapshot | None:
    """Every process's CPU seconds and the machine's; None where there is no /proc."""
    try:
        machine = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    ticks = [int(t) for t in machine[:8]]
    # Time the hypervisor gave to others (steal) is not this machine's work.
    not_busy = ticks[_IDLE] + ticks[_IOWAIT] + ticks[_STEAL]
    by_process: dict[int, tuple[str, float]] = {}
    bench_pid = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            # The command name in parentheses may hold spaces: the fields follow the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, UnicodeDecodeError):
            continue  # the process ended meanwhile
        pid = int(entry.name)
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks_per_s  # utime + stime
        by_process[pid] = (component_of(command_line, pid, bench_pid), cpu_s)
    return Snapshot(
        by_process,
        busy_s=(sum(ticks) - not_busy) / ticks_per_s,
        interrupts_s=(ticks[_IRQ] + ticks[_SOFTIRQ]) / ticks_per_s,
        total_s=sum(ticks) / ticks_per_s,
    )


def usage(before: Snapshot | None, after: Snapshot | None) -> dict[str, float] | None:
    """CPU seconds by component between two snapshots, and `interrupts`, `machine` (busy) and
    `machine_total` (busy or not).

    A process that started in between counts from zero; one that ended in
    between is missing (its last seconds are lost, a rounding error in a
    run of a minute).
    """
    if before is None or after is None:
        return None
    spent = dict.fromkeys(COMPONENTS, 0.0)
    for pid, (component, cpu_s) in after.by_process.items():
        previous = before.by_process.get(pid)
        # A pid the kernel gave to a new process meanwhile counts from zero too.
        earlier_s = previous[1] if previous and previous[1] <= cpu_s else 0.0
        spent[component] += cpu_s - earlier_s
    spent["interrupts"] = after.interrupts_s - before.interrupts_s
    spent["machine"] = after.busy_s - before.busy_s
    spent["machine_total"] = after.total_s - before.total_s
    return spent


def describe() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name"),
        "memory_gib": _memory_gib(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def _first_value(path: str, key: str) -> str | None:
    try:
        with open(path) as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def _memory_gib() -> float | None:
    total_kib = _first_value("/proc/meminfo", "MemTotal")
    return round(int(total_kib.split()[0]) / 2**20, 1) if total_kib else None
