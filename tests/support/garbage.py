"""Garbage messages for every queue the workers consume, drawn from one seeded random.Random.

A `Garbage` is one AMQP message (body, content type and encoding, headers)
with the queue it goes to, what kind of garbage it is, and its fate as the
contract sees it: `refused` (never applied; parked in a dead-letter queue,
with a `request.rejected` event on the intake), `accepted` (well formed, on
accounts and operations of the garbage's own, so it may be applied), or
`either` (the contract does not say, e.g. a Celery header out of range).
Garbage touches the honest accounts only in ways the contract refuses.
"""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass, field
from typing import Any

from tests.support import garbage_values as values

INTAKE = "requests"
TASKS = "tasks"
PERIODIC = "periodic"
CONTROL = "control"
QUEUE_WEIGHTS = {INTAKE: 40, TASKS: 42, PERIODIC: 12, CONTROL: 6}
# A few messages of several MiB (within RabbitMQ's 128 MiB and the workers' memory).
HUGE_SIZES_BYTES = [2 * 2**20, 6 * 2**20, 12 * 2**20]
DEPTHS = [64, 500, 999, 1000, 1001, 2000, 5000, 10_000, 100_000]
UNKNOWN_TASKS = ["billing.no_such_task", "billing.apply_operation ", "BILLING.APPLY_OPERATION", ""]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-16",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/x-msgpack",
    "application/data",
    "text/plain",
    "",
    None,
]
ENCODINGS = ["utf-8", "binary", "utf-16", "utf-32", "latin-1", "gzip", "rot13", "", None]
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class Garbage:
    queue: str
    kind: str
    fate: str
    body: bytes
    content_type: str | None = "application/json"
    content_encoding: str | None = "utf-8"
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Targets:
    """What the garbage may name: its own accounts and operations, and the honest ones."""

    run: str
    garbage_accounts: list[str]
    garbage_operations: list[str]
    honest_accounts: list[str]
    honest_operations: list[str]
    honest_hold: str
    task_names: list[str]
    marker_path: str


class Generator:
    def __init__(self, seed: int, targets: Targets) -> None:
        self.rng = random.Random(seed)
        self.targets = targets
        self._serial = 0

    def messages(self, count: int, queues: list[str] | None = None) -> list[Garbage]:
        """`count` messages for the given queues (all by default), a few huge ones first."""
        rng = self.rng
        chosen = {q: w for q, w in QUEUE_WEIGHTS.items() if queues is None or q in queues}
        made = []
        for index, size in enumerate(HUGE_SIZES_BYTES):
            queue = INTAKE if index % 2 == 0 else TASKS
            if queue in chosen:
                made.append(self.huge(queue, size))
        picks = rng.choices(list(chosen), weights=list(chosen.values()), k=count - len(made))
        return made + [self.one(queue) for queue in picks]

    def one(self, queue: str) -> Garbage:
        if queue == INTAKE:
            return self.intake()
        if queue == CONTROL:
            return self.control()
        return self.task_message(queue)

    def new_id(self, what: str) -> str:
        self._serial += 1
        return f"g{self.targets.run}-{what}{self._serial}"

    # The intake: `billing.requests`.

    def intake(self) -> Garbage:
        rng = self.rng
        roll = rng.random()
        if roll < 0.15:
            return self._raw(INTAKE, "bytes", values.random_bytes(rng, 4096), "refused")
        if roll < 0.30:
            body = values.dump(values.random_json_value(rng, rng.randint(1, 300)))
            return self._raw(INTAKE, "json", body, "refused")
        if roll < 0.40:
            return self._raw(INTAKE, "deep-json", self.deep_body(), "refused")
        if roll < 0.80:
            kind, fields = self.hostile_operation()
            return self._raw(
                INTAKE, "hostile-op", self._op_text({"type": kind, **fields}), "refused"
            )
        if roll < 0.88:
            return self._raw(INTAKE, "repeated-key", self.repeated_key_operation(), "refused")
        kind, fields = self.good_operation()
        return self._raw(INTAKE, "good-op", self._op_text({"type": kind, **fields}), "accepted")

    def _op_text(self, operation: dict[str, Any]) -> bytes:
        return values.dump(operation)

    def _raw(self, queue: str, kind: str, body: bytes, fate: str) -> Garbage:
        rng = self.rng
        headers = None
        if rng.random() < 0.3:
            headers = self.random_headers()
        return Garbage(
            queue,
            kind,
            fate,
            body,
            content_type=rng.choice(CONTENT_TYPES),
            content_encoding=rng.choice(ENCODINGS),
            headers=headers,
        )

    def deep_body(self) -> bytes:
        rng = self.rng
        depth = rng.choice(DEPTHS)
        core = rng.choice([b"1", b'"x"', b"null", b"1" + b"0" * 5000, b"NaN"])
        if rng.random() < 0.5:
            return values.deep_json(rng, depth, core)
        # A well-formed credit to the garbage's own account, deep in its metadata.
        operation = self._op_text(
            {
                "type": "credit",
                "operation_id": self.new_id("deep"),
                "account_id": rng.choice(self.targets.garbage_accounts),
                "amount": 1,
                "metadata": "@@",
            }
        )
        return operation.replace(b'"@@"', values.deep_json(rng, depth, core))

    def huge(self, queue: str, size: int) -> Garbage:
        blob = "x" * size
        fields = {
            "operation_id": self.new_id("huge"),
            "account_id": self.targets.garbage_accounts[0],
            "amount": 1,
            "metadata": {"blob": blob},
        }
        if queue == INTAKE:
            return Garbage(queue, "huge", "refused", values.dump({"type": "credit", **fields}))
        return self.envelope(
            queue, "huge", "billing.submit_request", ["credit", fields], {}, fate="refused"
        )

    def repeated_key_operation(self) -> bytes:
        """A credit whose repeated `account_id` names a garbage account, then an honest one."""
        garbage = json.dumps(self.rng.choice(self.targets.garbage_accounts))
        honest = json.dumps(self.rng.choice(self.targets.honest_accounts))
        operation_id = json.dumps(self.new_id("dup"))
        return (
            f'{{"type": "credit", "operation_id": {operation_id}, "account_id": {garbage}, '
            f'"amount": 5, "account_id": {honest}}}'
        ).encode()

    # Operations: well formed on the garbage's own accounts, or refused by the contract.

    def good_operation(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        accounts = self.targets.garbage_accounts
        account, other = rng.sample(accounts, 2)
        amount = rng.choice([1, rng.randint(1, 10**6), 10**15])
        kind = rng.choice(["credit", "debit", "transfer", "hold"])
        operation_id = self.new_id("ok")
        if kind == "transfer":
            return kind, {
                "operation_id": operation_id,
                "source_account_id": account,
                "destination_account_id": other,
                "amount": amount,
            }
        return kind, {"operation_id": operation_id, "account_id": account, "amount": amount}

    def hostile_operation(self) -> tuple[str, dict[str, Any]]:
        """An operation the contract refuses: a bad value, type, field or account."""
        rng = self.rng
        kind, fields = self.good_operation()
        if rng.random() < 0.5:
            # Aimed at an honest account: the contract must refuse it, so nothing moves.
            honest = rng.choice(self.targets.honest_accounts)
            for name in ("account_id", "source_account_id", "destination_account_id"):
                if name in fields:
                    fields[name] = honest
        defect = rng.randrange(9)
        if defect <= 2:
            fields["amount"] = values.awkward_amount(rng)
        elif defect == 3:
            # An identifier field only: an awkward identifier can be a good amount (123).
            name = rng.choice([name for name in fields if name != "amount"])
            fields[name] = values.awkward_identifier(rng, "g")
        elif defect == 4:
            fields[values.random_text(rng, 10) or "extra"] = values.random_scalar(rng)
        elif defect == 5:
            fields.pop(rng.choice(list(fields)))
        elif defect == 6:
            kind = rng.choice(["expiry", "refund", "CREDIT", "", "credit ", "reversal2"])
        elif defect == 7:
            return self.hostile_hold_operation()
        else:
            fields["metadata"] = values.random_json_value(rng, 40)
            fields["amount"] = values.awkward_amount(rng)
        return kind, fields

    def hostile_hold_operation(self) -> tuple[str, dict[str, Any]]:
        """A capture, release or expiry the contract refuses, some on the honest hold."""
        rng = self.rng
        hold = rng.choice([self.targets.honest_hold, self.new_id("nohold")])
        kind = rng.choice(["capture", "expiry", "capture", "hold"])
        operation_id = self.new_id("hh")
        if kind == "expiry":
            return kind, {"operation_id": operation_id, "hold_id": hold}
        if kind == "capture":
            return kind, {
                "operation_id": operation_id,
                "hold_id": hold,
                "amount": values.awkward_amount(rng),
                "final": rng.choice([True, False, "yes", 1, None]),
            }
        return kind, {
            "operation_id": operation_id,
            "account_id": rng.choice(self.targets.honest_accounts),
            "amount": 10,
            "expires_in": rng.choice([0, -1, 2_592_001, 10**20, 1.5, "60"]),
        }

    # The Celery task queues: `billing.tasks`, `billing.periodic`.

    def task_message(self, queue: str) -> Garbage:
        rng = self.rng
        roll = rng.random()
        if roll < 0.10:
            return self._raw(queue, "bytes", values.random_bytes(rng, 4096), "refused")
        if roll < 0.20:
            body = values.dump(values.random_json_value(rng, rng.randint(1, 300)))
            return self._raw(queue, "json", body, "refused")
        if roll < 0.25:
            return self.protocol_one(queue)
        if roll < 0.30:
            body = self.deep_body()
            task = rng.choice(self.targets.task_names)
            headers = self.celery_headers(task)
            return Garbage(queue, "deep-envelope", "refused", body, headers=headers)
        if roll < 0.31:
            return self.pickle_message(queue)
        if roll < 0.55:
            task = rng.choice(self.targets.task_names + UNKNOWN_TASKS)
            args = [values.random_json_value(rng, 20) for _ in range(rng.randint(0, 4))]
            kwargs = {values.random_text(rng, 8): values.random_scalar(rng)}
            if rng.random() < 0.5:
                kwargs = {}
            fate = "either" if task in self.targets.task_names else "refused"
            return self.envelope(queue, "random-args", task, args, kwargs, fate=fate)
        if roll < 0.65:
            return self.broken_headers(queue)
        if roll < 0.70:
            return self.embedded_calls(queue)
        return self.hostile_task(queue)

    def celery_headers(self, task: Any) -> dict[str, Any]:
        task_id = self.new_id("task")
        return {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "",
            "kwargsrepr": "",
            "origin": "garbage@test",
            "ignore_result": True,
        }

    def envelope(
        self,
        queue: str,
        kind: str,
        task: Any,
        args: Any,
        kwargs: Any,
        *,
        fate: str,
        embed: Any = None,
        headers: dict[str, Any] | None = None,
    ) -> Garbage:
        """A protocol-2 Celery message: headers name the task, the body is [args, kwargs, embed]."""
        body = values.dump([args, kwargs, EMPTY_EMBED if embed is None else embed])
        return Garbage(queue, kind, fate, body, headers=headers or self.celery_headers(task))

    def protocol_one(self, queue: str) -> Garbage:
        rng = self.rng
        task = rng.choice([*self.targets.task_names, *UNKNOWN_TASKS, [1], {"a": 1}, 7, None, 1.5])
        body = {"task": task, "id": self.new_id("p1"), "args": [], "kwargs": {}}
        if rng.random() < 0.5:
            body["args"] = values.random_json_value(rng, 10)
        return Garbage(queue, "protocol-1", "either", values.dump(body))

    def pickle_message(self, queue: str) -> Garbage:
        """A pickle that would create the marker file if anything ever unpickled it."""
        body = pickle.dumps(_Marker(self.targets.marker_path))
        headers = self.celery_headers(self.rng.choice(self.targets.task_names))
        return Garbage(
            queue,
            "pickle",
            "refused",
            body,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers=headers,
        )

    def broken_headers(self, queue: str) -> Garbage:
        """A task message of a good shape whose Celery headers are out of range or mistyped."""
        rng = self.rng
        task = rng.choice(self.targets.task_names)
        headers = self.celery_headers(task)
        name = rng.choice(
            ["task", "id", "eta", "expires", "retries", "timelimit", "argsrepr", "group", "root_id"]
        )
        headers[name] = rng.choice(
            [
                None,
                [1, 2],
                {"a": {"b": 1}},
                -1,
                2**62,
                1.5,
                "not a date",
                "2999-01-01T00:00:00+00:00",
                "1970-01-01T00:00:00+00:00",
                "x" * 100_000,
                [None, "x"],
                [-5, -5],
            ]
        )
        if rng.random() < 0.3:
            headers.pop(name, None)
        args, kwargs = self.good_arguments(task)
        return self.envelope(
            queue, "broken-headers", task, args, kwargs, fate="either", headers=headers
        )

    def good_arguments(self, task: str) -> tuple[list[Any], dict[str, Any]]:
        """Well-formed arguments for a task, on the garbage's own operations."""
        rng = self.rng
        if task == "billing.apply_operation":
            return [rng.choice(self.targets.garbage_operations)], {}
        if task == "billing.apply_operations":
            return [rng.sample(self.targets.garbage_operations, 2)], {}
        if task == "billing.submit_request":
            return list(self.good_operation()), {}
        return [], {}

    def embedded_calls(self, queue: str) -> Garbage:
        """Builtin Celery tasks and callbacks that call a ledger task from inside the worker."""
        rng = self.rng
        kind, fields = self.hostile_operation()
        call = {
            "task": "billing.submit_request",
            "args": [kind, fields],
            "kwargs": {},
            "options": {},
            "subtask_type": None,
            "immutable": True,
        }
        choice = rng.randrange(4)
        if choice == 0:
            return self.envelope(
                queue, "starmap", "celery.starmap", [call, [[kind, fields]]], {}, fate="either"
            )
        if choice == 1:
            return self.envelope(queue, "map", "celery.map", [call, [kind]], {}, fate="either")
        if choice == 2:
            return self.envelope(
                queue, "chunks", "celery.chunks", [call, [[kind, fields]], 1], {}, fate="either"
            )
        embed = {"callbacks": [call], "errbacks": [call], "chain": [call], "chord": None}
        return self.envelope(
            queue, "callbacks", "billing.relay_outbox", [], {}, fate="either", embed=embed
        )

    def hostile_task(self, queue: str) -> Garbage:
        """Well-typed arguments the contract refuses, for each ledger task."""
        rng = self.rng
        task = rng.choice(
            ["billing.submit_request"] * 3 + ["billing.apply_operation", "billing.apply_operations"]
        )
        if task == "billing.submit_request":
            kind, fields = self.hostile_operation()
            if rng.random() < 0.1:
                # An honest operation's id with another body: an idempotency conflict.
                fields["operation_id"] = rng.choice(self.targets.honest_operations)
                fields["amount"] = 999
            return self.envelope(queue, "hostile-submit", task, [kind, fields], {}, fate="refused")
        ids = self.hostile_ids()
        if task == "billing.apply_operation":
            if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], str):
                return self.envelope(queue, "hostile-apply", task, ids, {}, fate="either")
            return self.envelope(queue, "hostile-apply", task, [ids], {}, fate="refused")
        fate = "either" if _good_ids(ids) else "refused"
        return self.envelope(queue, "hostile-apply", task, [ids], {}, fate=fate)

    def hostile_ids(self) -> Any:
        rng = self.rng
        known = self.targets.honest_operations + self.targets.garbage_operations
        choice = rng.randrange(7)
        if choice == 0:
            return [self.new_id("none") for _ in range(1000)]
        if choice == 1:
            return [rng.choice(known) for _ in range(1000)]
        if choice == 2:
            return [self.new_id("none") for _ in range(1001)]
        if choice == 3:
            return [rng.choice(known)]
        if choice == 4:
            return []
        if choice == 5:
            return [values.awkward_identifier(rng, "g")]
        return values.awkward_identifier(rng, "g")

    # Celery's control queue (`billing.pidbox`), consumed by every worker.

    def control(self) -> Garbage:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return self._raw(CONTROL, "bytes", values.random_bytes(rng, 2048), "either")
        if roll < 0.5:
            return self._raw(CONTROL, "deep-json", self.deep_body(), "either")
        # Unknown or read-only commands with random arguments; never one that changes a worker.
        method = rng.choice(["no_such_command", "ping", "stats", "active", "report", "__init__"])
        body = {
            "method": method,
            "arguments": values.random_json_value(rng, 10),
            "destination": rng.choice([None, [], ["nobody@nowhere"], "x", 5]),
            "pattern": None,
            "matcher": None,
        }
        return Garbage(CONTROL, "control-command", "either", values.dump(body))

    def random_headers(self) -> dict[str, Any]:
        """Random values for headers the workers read; never the broker's own `x-` headers.

        RabbitMQ 3.10 reads `x-death` when it dead-letters a message: one that
        is not a list of tables crashes its at-least-once dead-lettering, for
        every queue of the broker (seen: `function_clause` in
        `rabbit_dead_letter:group_by_queue_and_reason`, then no quorum queue
        with that strategy could be declared until the broker restarted).
        That is the broker's fault and the test's broker is shared.
        """
        rng = self.rng
        headers: dict[str, Any] = {}
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(["task", "id", "compression", "lang", "retries", "origin"])
            headers[name] = rng.choice(
                [
                    None,
                    1,
                    -(2**63),
                    True,
                    1.5,
                    "application/x-gzip",
                    "billing.apply_operation",
                    [1, "a", None],
                    {"nested": {"x": [1]}},
                    values.random_text(rng, 30),
                ]
            )
        return headers


def _good_ids(ids: Any) -> bool:
    return (
        isinstance(ids, list)
        and 0 < len(ids) <= 1000
        and all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids)
        and all(set(i) <= set(values.ID_CHARS) for i in ids)
    )


class _Marker:
    """Unpickled, it would write a file: the proof that something executed a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))
