"""One bench run: set up the run's accounts, drive the load, wait for the outcomes.

Everything happens on one asyncio loop, except reading events and
publishing to the intake, which run in threads (see `bench.broker`).
"""

from __future__ import annotations

import asyncio
import math
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from bench import machine
from bench.broker import EventStream, IntakePublisher, Outcome
from bench.client import (
    BATCH_PATH,
    Api,
    SetupError,
    Tally,
    batch_endpoint_available,
    create_account,
    submit_batch,
    submit_one,
)
from bench.config import Settings
from bench.reads import ReadMix, ReadTally, read_loop
from bench.workload import Submission, Workload, batch_size_max

progress_interval_s = 1.0
drain_poll_s = 0.05
outstanding_poll_s = 0.01
# Setup gives up when no opening credit has applied for this long: a slow
# service may take minutes to credit many accounts, a stuck one never does.
setup_stall_s = 60
setup_progress_interval_s = 5

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    url: str
    token: str
    concurrency: int
    duration_s: float | None
    count: int | None
    rate: float | None
    batch: int
    drain_timeout_s: float
    # Accepted operations whose outcome has not arrived, at most (0: no limit).
    outstanding_max: int = 0
    # Where events are read: the bench's own queue, or billing.responses (workload.EVENT_SOURCES).
    events: str = "own"
    # Readers beside the load, each a closed loop of the read mix (bench.reads).
    readers: int = 0


@dataclass
class Record:
    """What a run measured, for the report."""

    tally: Tally
    outcomes: dict[str, Outcome]
    load_started_at: float = 0.0
    load_ended_at: float = 0.0
    drain_ended_at: float = 0.0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    # CPU seconds by component of every process on this machine (None without /proc).
    machine_cpu_s: dict[str, float] | None = None
    # Events of other operations the stream saw (took, when reading billing.responses).
    other_events: int = 0
    errors: list[str] = field(default_factory=list)
    reads: ReadTally = field(default_factory=ReadTally)


async def run(plan: Plan, workload: Workload, settings: Settings) -> Record:
    api = Api(plan.url, plan.token, plan.concurrency)
    stream = EventStream(settings, workload.run_id, workload.holds_to_settle.append, plan.events)
    try:
        await asyncio.to_thread(stream.start)
    except RuntimeError as error:
        raise SetupError(str(error)) from error
    publisher = IntakePublisher(settings) if workload.amqp_share else None
    try:
        if publisher is not None:
            await asyncio.to_thread(publisher.start, asyncio.get_running_loop())
        await set_up(api, plan, workload, stream)
        return await measure(api, publisher, plan, workload, stream)
    finally:
        await api.close()
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        await asyncio.to_thread(stream.stop)


SETUP_CONCURRENCY_MAX = 32


async def set_up(api: Api, plan: Plan, workload: Workload, stream: EventStream) -> None:
    """Create the run's accounts, credit each, and wait until every credit has applied."""
    started = time.monotonic()
    # Accounts are created synchronously, each on a database connection of
    # the API: a modest number at a time keeps the setup from queueing on them.
    setup_concurrency = min(plan.concurrency, SETUP_CONCURRENCY_MAX)
    await bounded(workload.account_ids, setup_concurrency, lambda a: create_account(api, a))
    created_s = time.monotonic() - started
    credits = workload.opening_credits()
    tally = Tally()
    has_batch_endpoint = await batch_endpoint_available(api)
    if plan.batch and not has_batch_endpoint:
        raise SetupError(f"--batch needs POST {BATCH_PATH}, which the service does not have")
    if has_batch_endpoint:
        chunks = [credits[i : i + batch_size_max] for i in range(0, len(credits), batch_size_max)]
        await bounded(chunks, plan.concurrency, lambda chunk: submit_batch(api, tally, chunk))
    else:
        await bounded(credits, plan.concurrency, lambda credit: submit_one(api, tally, credit))
    if len(tally.accepted_at) != len(credits):
        raise SetupError(f"opening credits refused: {dict(tally.rejected)}")
    await wait_for_outcomes([c.operation_id for c in credits], stream)
    failed = {stream.outcomes[c.operation_id].error_code for c in credits} - {None}
    if failed:
        raise SetupError(f"opening credits failed: {sorted(map(str, failed))}")
    credited_s = time.monotonic() - started - created_s
    progress(
        f"setup: {len(credits)} accounts created in {created_s:.1f} s, "
        f"their opening credits applied in {credited_s:.1f} s"
    )


async def wait_for_outcomes(operation_ids: list[str], stream: EventStream) -> None:
    """Wait for every operation's event, as long as they keep coming."""
    applied, progressed_at, shown_at = 0, time.monotonic(), time.monotonic()
    while applied < len(operation_ids):
        await asyncio.sleep(0.25)
        now_applied = sum(1 for i in operation_ids if i in stream.outcomes)
        now = time.monotonic()
        if now_applied > applied:
            applied, progressed_at = now_applied, now
        if stream.error is not None or now - progressed_at > setup_stall_s:
            raise SetupError(
                f"{len(operation_ids) - applied} opening credits still not applied "
                f"({setup_stall_s} s without progress; event stream error: {stream.error})"
            )
        if now - shown_at >= setup_progress_interval_s:
            progress(f"setup: {applied}/{len(operation_ids)} opening credits applied")
            shown_at = now


async def bounded(
    items: Iterable[T], concurrency: int, action: Callable[[T], Awaitable[None]]
) -> None:
    """Run `action` on every item, at most `concurrency` at a time."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await action(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(
    api: Api, publisher: IntakePublisher | None, plan: Plan, workload: Workload, stream: EventStream
) -> Record:
    record = Record(Tally(), stream.outcomes)
    baseline = len(stream.outcomes)
    load = Load(
        api,
        publisher,
        plan,
        workload,
        record.tally,
        lambda: len(record.tally.accepted_at) - (len(stream.outcomes) - baseline),
    )
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    machine_before = machine.snapshot()
    record.load_started_at = time.monotonic()
    shown = Progress(record, baseline)
    reporter = asyncio.create_task(shown.run())
    await drive_with_readers(load, plan, workload, record)
    record.load_ended_at = time.monotonic()
    await drain(record, baseline, plan.drain_timeout_s)
    record.drain_ended_at = time.monotonic()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    record.machine_cpu_s = machine.usage(machine_before, machine.snapshot())
    reporter.cancel()
    shown.show()
    record.cpu_user_s = usage_after.ru_utime - usage_before.ru_utime
    record.cpu_system_s = usage_after.ru_stime - usage_before.ru_stime
    record.other_events = stream.other_events
    for name, component in (("event stream", stream), ("intake", publisher)):
        if component is not None and component.error is not None:
            record.errors.append(f"{name}: {component.error!r}")
    return record


async def drive_with_readers(load: Load, plan: Plan, workload: Workload, record: Record) -> None:
    """Drive the load, with `plan.readers` readers beside it on connections of their own."""
    if not plan.readers:
        await load.drive()
        return
    readers_api = Api(plan.url, plan.token, plan.readers)
    load_over = False
    accepted = record.tally.accepted_at
    try:
        readers = [
            asyncio.create_task(
                read_loop(
                    readers_api.get,
                    ReadMix(workload.account_ids, lambda: next(reversed(accepted), None), None),
                    record.reads,
                    lambda: load_over,
                )
            )
            for _ in range(plan.readers)
        ]
        try:
            await load.drive()
        finally:
            load_over = True
            await asyncio.gather(*readers)
    finally:
        await readers_api.close()


class Load:
    """`concurrency` senders drawing operations until the count or the duration is used up.

    Without a rate each sender sends again as soon as it is answered (closed
    loop); with one, operations are started on a schedule of `rate` per
    second (open loop), as far as `concurrency` allows. With `outstanding_max`,
    a sender also waits while that many accepted operations have no outcome
    yet, so a fast intake cannot run ahead of the workers.
    """

    def __init__(
        self,
        api: Api,
        publisher: IntakePublisher | None,
        plan: Plan,
        workload: Workload,
        tally: Tally,
        outstanding: Callable[[], int],
    ) -> None:
        self._api, self._publisher, self._plan = api, publisher, plan
        self._outstanding = outstanding
        self._workload, self._tally = workload, tally
        self._remaining = plan.count if plan.count is not None else math.inf
        self._deadline = math.inf
        self._next_slot_at = 0.0

    async def drive(self) -> None:
        now = time.monotonic()
        if self._plan.duration_s is not None:
            self._deadline = now + self._plan.duration_s
        self._next_slot_at = now
        await asyncio.gather(*(self._sender() for _ in range(self._plan.concurrency)))

    async def _sender(self) -> None:
        size = self._plan.batch or 1
        while True:
            taken = int(min(size, self._remaining))
            if taken <= 0 or time.monotonic() >= self._deadline:
                return
            self._remaining -= taken
            await self._pace(taken)
            await self._hold_back(taken)
            if time.monotonic() >= self._deadline:
                return
            submissions = [self._workload.draw() for _ in range(taken)]
            self._tally.sent += taken
            await self._send(submissions)

    async def _pace(self, operations: int) -> None:
        if not self._plan.rate:
            return
        slot_at = self._next_slot_at
        self._next_slot_at += operations / self._plan.rate
        delay_s = slot_at - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    async def _hold_back(self, operations: int) -> None:
        """Wait for room under `outstanding_max`; not past the deadline or the drain timeout."""
        limit = self._plan.outstanding_max
        give_up_at = min(self._deadline, time.monotonic() + self._plan.drain_timeout_s)
        while limit and self._outstanding() + operations > limit:
            if time.monotonic() >= give_up_at:
                return
            await asyncio.sleep(outstanding_poll_s)

    async def _send(self, submissions: list[Submission]) -> None:
        over_http = [s for s in submissions if not s.via_amqp]
        if len(over_http) < len(submissions):
            await asyncio.gather(*(self._publish(s) for s in submissions if s.via_amqp))
        if not over_http:
            return
        if self._plan.batch:
            await submit_batch(self._api, self._tally, over_http)
        else:
            for submission in over_http:
                await submit_one(self._api, self._tally, submission)

    async def _publish(self, submission: Submission) -> None:
        assert self._publisher is not None
        if await self._publisher.publish(submission.message()):
            self._tally.accept(submission.operation_id, time.monotonic())
        else:
            self._tally.rejected["amqp_publish_failed"] += 1


async def drain(record: Record, baseline: int, timeout_s: float) -> None:
    """Wait until every accepted operation's event has arrived, or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        arrived = len(record.outcomes) - baseline
        if arrived >= len(record.tally.accepted_at) and not pending_ids(record):
            return
        await asyncio.sleep(drain_poll_s)


def pending_ids(record: Record) -> list[str]:
    return [i for i in record.tally.accepted_at if i not in record.outcomes]


class Progress:
    """One line a second on stderr: elapsed, sent, accepted/s, completed/s, in flight."""

    def __init__(self, record: Record, baseline: int) -> None:
        self._record, self._baseline = record, baseline
        self._last_at, self._last_accepted, self._last_completed = time.monotonic(), 0, 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(progress_interval_s)
            self.show()

    def show(self) -> None:
        tally, now = self._record.tally, time.monotonic()
        accepted = len(tally.accepted_at)
        completed = len(self._record.outcomes) - self._baseline
        refused = sum(tally.rejected.values())
        interval_s = max(now - self._last_at, 1e-9)
        progress(
            f"{now - self._record.load_started_at:6.1f} s  sent {tally.sent:>8}  "
            f"accepted/s {(accepted - self._last_accepted) / interval_s:>7.0f}  "
            f"completed/s {(completed - self._last_completed) / interval_s:>7.0f}  "
            f"in flight {max(tally.sent - refused - completed, 0):>6}"
        )
        self._last_at, self._last_accepted, self._last_completed = now, accepted, completed


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
