"""The processes of `billing up`: started, logged to files, restarted a few times, stopped together.

`billing up` itself prints one line per process event (started, exited with
its status, started again, stopped); each process's own output goes to a log
file named in the `started` line, or to the terminal with `--verbose`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click

from billing import limits


@dataclass
class Child:
    name: str
    command: list[str]
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    restarts: int = 0
    start_again_at: float | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


class Supervisor:
    """Runs named commands; a process that exits is started again after a pause, a few times."""

    def __init__(
        self, commands: dict[str, list[str]], env: dict[str, str], cwd: Path, log_dir: Path | None
    ) -> None:
        self.children = [Child(name, command) for name, command in commands.items()]
        self._env, self._cwd, self._log_dir = env, cwd, log_dir
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path | None:
        return self._log_dir / f"{name}.log" if self._log_dir is not None else None

    def start_all(self) -> None:
        for child in self.children:
            self._start(child, fresh_log=True)

    def _start(self, child: Child, *, fresh_log: bool) -> None:
        child.log_path = self.log_path(child.name)
        output: IO[bytes] | None = None
        if child.log_path is not None:
            # A new session starts a new log; a restart appends, keeping the crash before it.
            output = child.log_path.open("wb" if fresh_log else "ab")
        child.log_file = output
        child.popen = subprocess.Popen(
            child.command,
            env=self._env,
            cwd=self._cwd,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        where = f", log: {child.log_path}" if child.log_path else ""
        again = " again" if child.restarts else ""
        click.echo(f"{child.name}: started{again} (pid {child.popen.pid}{where})")

    def tend(self) -> bool:
        """Notice exits and start processes again when their pause is over; False: give up."""
        now = time.monotonic()
        for child in self.children:
            if child.start_again_at is not None:
                if now >= child.start_again_at:
                    child.start_again_at = None
                    self._start(child, fresh_log=False)
                continue
            assert child.popen is not None
            returncode = child.popen.poll()
            if returncode is None:
                continue
            self._close_log(child)
            if child.restarts >= limits.up_restarts_max:
                click.echo(
                    f"{child.name}: exited with {describe_exit(returncode)} after "
                    f"{child.restarts} restarts; stopping everything" + self._see_log(child),
                    err=True,
                )
                return False
            pause_s = min(
                limits.up_restart_backoff_min_s * 2**child.restarts,
                limits.up_restart_backoff_max_s,
            )
            child.restarts += 1
            child.start_again_at = now + pause_s
            click.echo(
                f"{child.name}: exited with {describe_exit(returncode)}; starting it again in "
                f"{pause_s} s (restart {child.restarts} of {limits.up_restarts_max})"
                + self._see_log(child),
                err=True,
            )
        return True

    @staticmethod
    def _see_log(child: Child) -> str:
        return f"; see {child.log_path}" if child.log_path else ""

    @staticmethod
    def _close_log(child: Child) -> None:
        if child.log_file is not None:
            child.log_file.close()
            child.log_file = None

    def running(self) -> list[Child]:
        return [c for c in self.children if c.popen is not None and c.popen.poll() is None]

    def stop_all(self) -> bool:
        """SIGTERM every process, SIGKILL what remains after the grace; True: all ended cleanly."""
        for child in self.running():
            assert child.popen is not None
            child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + limits.up_stop_grace_s
        clean = True
        for child in self.children:
            if child.popen is None or child.start_again_at is not None:
                continue
            try:
                returncode = child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.popen.kill()
                returncode = child.popen.wait()
            self._close_log(child)
            clean = clean and returncode in (0, -signal.SIGTERM)
            click.echo(f"{child.name}: stopped ({describe_exit(returncode)})")
        return clean


def wait_until_ready(
    supervisor: Supervisor,
    checks: list[tuple[str, Callable[[], str]]],
    stopping: Callable[[], bool],
) -> bool:
    """Wait until every check returns "" (ready), saying what it waits for; False: gave up.

    Each check is (what, probe): the probe returns "" when ready, otherwise
    why not, printed once each time it changes.
    """
    deadline = time.monotonic() + limits.up_ready_wait_s
    said = ""
    for what, probe in checks:
        while not stopping():
            if not supervisor.tend():
                return False
            reason = probe()
            if not reason:
                break
            line = f"waiting for {what} ({reason})"
            if line != said:
                click.echo(line)
                said = line
            if time.monotonic() > deadline:
                click.echo(
                    f"gave up after {limits.up_ready_wait_s} s waiting for {what} ({reason}); "
                    "the logs named above say why",
                    err=True,
                )
                return False
            time.sleep(limits.up_ready_poll_interval_s)
    return not stopping()


class WaitingEventsWatch:
    """Says when events start and stop waiting to be published, as /readyz tells it.

    `billing up` asks every `up_events_check_interval_s`; a line is printed
    only when the answer changes, so a long backlog is one line, not a flood.
    """

    def __init__(self, probe: Callable[[], str | None]) -> None:
        self._probe = probe
        self._next_at = 0.0
        self._waiting = False

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + limits.up_events_check_interval_s
        said = self._probe()
        if said is None:
            return
        if said and not self._waiting:
            click.echo(f"events are waiting: {said} (docs/operations.md, 'The event backlog')")
        elif not said and self._waiting:
            click.echo("events: every waiting event is published")
        self._waiting = bool(said)
