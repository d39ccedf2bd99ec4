"""The service against a reference model of the contract, one step at a time and under load.

`Model` is the contract in plain Python: accounts with posted, held and an
overdraft limit, holds with captured and remaining amounts, and the rules in
the order billing/rules.py and billing/holds.py check them. Hypothesis drives
random sequences of every operation type through HTTP and compares each
outcome and every balance with the model; a second test sends a seeded random
workload from many threads at once and replays the ledger in its order
against the same model. Both end with `billing audit`.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from billing.config import Settings
from tests.support.stack import Client, environment, wait_until

# Every outcome the step-by-step test must produce at least once over its examples.
OUTCOMES_TO_COVER = {
    "succeeded",
    "insufficient_funds",
    "amount_exceeds_hold",
    "hold_not_active",
    "hold_not_found",
    "same_account",
    "currency_mismatch",
    "account_not_found",
    "retry",
    "conflict",
    "operation_not_reversible",
    "amount_exceeds_reversible",
}
MODEL_EXAMPLES = 30
# Holds and captures twice as often as the rest: they have the most rules.
STEP_KINDS = [
    *("hold", "capture", "credit", "debit", "transfer", "hold", "capture", "release"),
    *("reversal", "retry", "conflict"),
]
STEPS_MIN, STEPS_MAX = 5, 25
OVERDRAFT_LIMIT = 300

CONCURRENT_ACCOUNTS = 8
CONCURRENT_OPERATIONS = 600
SENDER_THREADS = 10
SETTLE_TIMEOUT_S = 60


# -- the reference model ------------------------------------------------------------------


@dataclass
class ModelAccount:
    currency: str
    overdraft_limit: int
    posted: int = 0
    held: int = 0

    @property
    def available(self) -> int:
        return self.posted - self.held

    @property
    def room(self) -> int:
        """The most a debit, transfer or hold may take."""
        return self.available + self.overdraft_limit

    def balance(self) -> dict[str, int]:
        return {"posted": self.posted, "held": self.held, "available": self.available}


@dataclass
class ModelHold:
    hold_id: str
    account_id: str
    destination_account_id: str | None
    amount: int
    captured: int = 0
    remaining: int = 0
    status: str = "active"

    def view(self) -> dict[str, Any]:
        """The fields of the contract's hold representation that the model knows."""
        return {
            "hold_id": self.hold_id,
            "account_id": self.account_id,
            "destination_account_id": self.destination_account_id,
            "amount": self.amount,
            "captured": self.captured,
            "remaining": self.remaining,
            "status": self.status,
            "expires_at": None,
        }


HOLD_FIELDS = tuple(ModelHold("", "", None, 0).view())


@dataclass
class ModelMove:
    """What a succeeded credit, debit, transfer or capture moved (None: the outside world)."""

    source: str | None
    destination: str | None
    amount: int
    reversed: int = 0
    reversals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What an operation ended as: status, error code, and the balances it reports."""

    status: str
    error: str | None = None
    balances: dict[str, dict[str, int]] | None = None

    @classmethod
    def observed(cls, operation: dict[str, Any]) -> Outcome:
        error = operation["error"]["code"] if operation["error"] else None
        return cls(operation["status"], error, operation.get("balances"))


class Model:
    """The contract's rules, applied one operation at a time."""

    def __init__(self) -> None:
        self.accounts: dict[str, ModelAccount] = {}
        self.holds: dict[str, ModelHold] = {}
        self.moves: dict[str, ModelMove] = {}

    def open(self, account_id: str, currency: str, overdraft_limit: int = 0) -> None:
        self.accounts[account_id] = ModelAccount(currency, overdraft_limit)

    def room(self, account_id: str) -> int:
        account = self.accounts.get(account_id)
        return account.room if account else 0

    def apply(self, operation_id: str, kind: str, request: dict[str, Any]) -> Outcome:
        """Apply the operation; a failure changes nothing."""
        result = getattr(self, f"_{kind}")(operation_id, request)
        if isinstance(result, str):
            return Outcome("failed", result)
        return Outcome("succeeded", None, {a: self.accounts[a].balance() for a in result})

    def _credit(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        account = self.accounts.get(request["account_id"])
        if account is None:
            return "account_not_found"
        account.posted += request["amount"]
        self.moves[operation_id] = ModelMove(None, request["account_id"], request["amount"])
        return [request["account_id"]]

    def _debit(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        account = self.accounts.get(request["account_id"])
        if account is None:
            return "account_not_found"
        if request["amount"] > account.room:
            return "insufficient_funds"
        account.posted -= request["amount"]
        self.moves[operation_id] = ModelMove(request["account_id"], None, request["amount"])
        return [request["account_id"]]

    def _reversal(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        """Moves back what a succeeded credit, debit, transfer or capture moved."""
        move = self.moves.get(request["reverses"])
        if move is None:
            return "operation_not_reversible"
        remaining = move.amount - move.reversed
        amount = request.get("amount", remaining)
        if remaining == 0 or amount > remaining:
            return "amount_exceeds_reversible"
        if move.destination is not None and amount > self.accounts[move.destination].room:
            return "insufficient_funds"
        if move.destination is not None:
            self.accounts[move.destination].posted -= amount
        if move.source is not None:
            self.accounts[move.source].posted += amount
        move.reversed += amount
        move.reversals.append(operation_id)
        return [a for a in (move.source, move.destination) if a is not None]

    def _transfer(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        source_id, destination_id = request["source_account_id"], request["destination_account_id"]
        if source_id == destination_id:
            return "same_account"
        source = self.accounts.get(source_id)
        if source is None:
            return "account_not_found"
        failure = self._counterparty(source_id, destination_id)
        if failure:
            return failure
        if request["amount"] > source.room:
            return "insufficient_funds"
        source.posted -= request["amount"]
        self.accounts[destination_id].posted += request["amount"]
        self.moves[operation_id] = ModelMove(source_id, destination_id, request["amount"])
        return [source_id, destination_id]

    def _counterparty(self, account_id: str, other_id: str) -> str | None:
        if other_id == account_id:
            return "same_account"
        other = self.accounts.get(other_id)
        if other is None:
            return "account_not_found"
        if other.currency != self.accounts[account_id].currency:
            return "currency_mismatch"
        return None

    def _hold(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        account_id = request["account_id"]
        account = self.accounts.get(account_id)
        if account is None:
            return "account_not_found"
        destination_id = request.get("destination_account_id")
        if destination_id is not None:
            failure = self._counterparty(account_id, destination_id)
            if failure:
                return failure
        if request["amount"] > account.room:
            return "insufficient_funds"
        account.held += request["amount"]
        self.holds[operation_id] = ModelHold(
            operation_id, account_id, destination_id, request["amount"], 0, request["amount"]
        )
        return [account_id]

    def _active_hold(self, hold_id: str) -> ModelHold | str:
        hold = self.holds.get(hold_id)
        if hold is None:
            return "hold_not_found"
        # hold_expired comes next in the service's order; these holds never expire.
        if hold.status != "active":
            return "hold_not_active"
        return hold

    def _capture(self, operation_id: str, request: dict[str, Any]) -> str | list[str]:
        hold = self._active_hold(request["hold_id"])
        if isinstance(hold, str):
            return hold
        amount = request.get("amount", hold.remaining)
        if amount > hold.remaining:
            return "amount_exceeds_hold"
        unheld = hold.remaining if request.get("final", True) else amount
        account = self.accounts[hold.account_id]
        account.held -= unheld
        account.posted -= amount
        touched = [hold.account_id]
        if hold.destination_account_id:
            self.accounts[hold.destination_account_id].posted += amount
            touched.append(hold.destination_account_id)
        hold.captured += amount
        hold.remaining -= unheld
        self.moves[operation_id] = ModelMove(hold.account_id, hold.destination_account_id, amount)
        if hold.remaining == 0:
            hold.status = "captured"
        return touched

    def _release(self, _: str, request: dict[str, Any]) -> str | list[str]:
        hold = self._active_hold(request["hold_id"])
        if isinstance(hold, str):
            return hold
        self.accounts[hold.account_id].held -= hold.remaining
        hold.remaining = 0
        hold.status = "released"
        return [hold.account_id]


# -- talking to the service -----------------------------------------------------------------


def route(kind: str, operation_id: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The POST path and body of an operation; a capture's or release's hold is in the path."""
    if kind in ("capture", "release"):
        body = {k: v for k, v in request.items() if k != "hold_id"}
        return f"holds/{request['hold_id']}/{kind}", {"operation_id": operation_id, **body}
    return f"{kind}s", {"operation_id": operation_id, **request}


def submit(client: Client, kind: str, operation_id: str, request: dict[str, Any]) -> Any:
    return client.submit(*route(kind, operation_id, request))


def assert_audit_passes(settings: Settings) -> None:
    billing = Path(sys.executable).with_name("billing")
    result = subprocess.run(
        [str(billing), "audit"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def holds_of(client: Client, account_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/accounts/{account_id}/holds", params={"limit": 500})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None, "more holds than one page"
    return list(body["items"])


def assert_service_state_matches(client: Client, model: Model) -> None:
    """Every account's balances and every hold, read back over HTTP, equal the model's."""
    for account_id, account in model.accounts.items():
        stored = client.account(account_id)
        assert (stored["currency"], stored["overdraft_limit"]) == (
            account.currency,
            account.overdraft_limit,
        ), account_id
        figures = {k: stored[k] for k in ("posted", "held", "available")}
        assert figures == account.balance(), account_id
        listed = {
            h["hold_id"]: {k: h[k] for k in HOLD_FIELDS} for h in holds_of(client, account_id)
        }
        expected = {h.hold_id: h.view() for h in model.holds.values() if h.account_id == account_id}
        assert listed == expected, account_id


# -- 1. step by step, driven by hypothesis --------------------------------------------------


@dataclass
class Submitted:
    operation_id: str
    kind: str
    request: dict[str, Any]
    outcome: dict[str, Any]


@dataclass
class ModelRun:
    """One example: its own accounts, the model, and what has been submitted so far."""

    client: Client
    prefix: str
    seen: Counter[str]
    model: Model = field(default_factory=Model)
    history: list[Submitted] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.usd = [f"{self.prefix}-usd{i}" for i in range(3)]
        self.eur = f"{self.prefix}-eur"
        self.ghost = f"{self.prefix}-ghost"  # never created
        self.no_hold = f"{self.prefix}-nohold"  # never used as an operation id
        # Weighted toward the USD accounts so that most operations can succeed.
        self.account_choices = [*self.usd, *self.usd, self.eur, self.ghost]
        self._ids = itertools.count()

    def open_accounts(self) -> None:
        limits = {self.usd[0]: 0, self.usd[1]: 0, self.usd[2]: OVERDRAFT_LIMIT}
        for account_id, limit in limits.items():
            self.client.create_account(account_id, "USD", overdraft_limit=limit)
            self.model.open(account_id, "USD", limit)
        self.client.create_account(self.eur, "EUR")
        self.model.open(self.eur, "EUR")

    def holds(self) -> st.SearchStrategy[str]:
        """A hold to capture or release: often an active one.

        Otherwise any hold operation's id (a failed one left no hold) or an id
        that was never used.
        """
        active = [h.hold_id for h in reversed(self.model.holds.values()) if h.status == "active"]
        tried = [s.operation_id for s in reversed(self.history) if s.kind == "hold"]
        anything = st.sampled_from([*tried, self.no_hold])
        return st.one_of(st.sampled_from(active), anything) if active else anything

    def reversible(self) -> st.SearchStrategy[str]:
        """An operation to reverse: often one with something left to reverse.

        Otherwise any recent operation (a hold, a failed one, a reversal) or
        an id that was never used.
        """
        moves = self.model.moves
        open_moves = [i for i, m in reversed(moves.items()) if m.amount > m.reversed]
        recent = [s.operation_id for s in reversed(self.history[-10:])]
        anything = st.sampled_from([*recent, self.no_hold])
        return st.one_of(st.sampled_from(open_moves), anything) if open_moves else anything

    def run_new(self, kind: str, request: dict[str, Any]) -> None:
        operation_id = f"{self.prefix}-op{next(self._ids)}"
        response = submit(self.client, kind, operation_id, request)
        assert response.status_code == 202, response.text
        outcome = self.client.wait(operation_id)
        expected = self.model.apply(operation_id, kind, request)
        given = {k: v for k, v in request.items() if k != "metadata"}
        assert (outcome["type"], outcome["request"]) == (kind, given), outcome
        assert outcome["metadata"] == request.get("metadata", {}), outcome
        assert Outcome.observed(outcome) == expected, (
            f"{kind} {request}: the service answered {outcome}, the model expects {expected}"
        )
        self.seen[f"{kind} {expected.error or expected.status}"] += 1
        self.history.append(Submitted(operation_id, kind, request, outcome))

    def retry(self, earlier: Submitted) -> None:
        """The same body again: 200 with the same terminal outcome, nothing applied again."""
        response = submit(self.client, earlier.kind, earlier.operation_id, earlier.request)
        assert response.status_code == 200, response.text
        self.assert_unchanged(earlier, response.json())
        self.seen["retry"] += 1

    def assert_unchanged(self, earlier: Submitted, now: dict[str, Any]) -> None:
        """As it completed, but for the reversals of it since, which are the model's."""
        expected = dict(earlier.outcome)
        move = self.model.moves.get(earlier.operation_id)
        if move is not None:
            expected.update(reversed=move.reversed, reversals=move.reversals)
        assert now == expected

    def conflict(self, earlier: Submitted, kind: str, request: dict[str, Any]) -> None:
        """The same operation id with another body or type: 409, the operation unchanged."""
        response = submit(self.client, kind, earlier.operation_id, request)
        assert response.status_code == 409, (kind, request, response.text)
        assert response.json()["error"]["code"] == "idempotency_conflict", response.text
        self.assert_unchanged(earlier, self.client.wait(earlier.operation_id))
        self.seen["conflict"] += 1


def amounts(room: int) -> st.SearchStrategy[int]:
    """Amounts around `room`, the most that may succeed, so both sides of the edge occur."""
    edges = [a for a in (room, room + 1) if a >= 1]
    return st.one_of(st.integers(1, max(room, 1)), st.sampled_from(edges))


def capture_amounts(remaining: int) -> st.SearchStrategy[int | None]:
    """No amount (the default: all that remains), one that fits, all of it, or one too many."""
    fits = st.integers(1, max(remaining, 1))
    return st.sampled_from(["default", "fits", "all", "over"]).flatmap(
        lambda choice: {
            "default": st.none(),
            "fits": fits,
            "all": st.just(max(remaining, 1)),
            "over": st.just(remaining + 1),
        }[choice]
    )


METADATA = st.dictionaries(
    st.text(max_size=4),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6)),
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner),
        max_leaves=4,
    ),
    max_size=3,
)


def draw_step(data: Any, run: ModelRun) -> None:
    model, pick = run.model, data.draw
    kind = pick(st.sampled_from(STEP_KINDS), label="kind")
    if kind in ("capture", "release") and not model.holds:
        kind = "hold"  # nothing to capture yet: hold_not_found is common enough without this
    if kind == "retry":
        run.retry(pick(st.sampled_from(run.history), label="retried"))
        return
    if kind == "conflict":
        earlier = pick(st.sampled_from(run.history), label="conflicting with")
        run.conflict(earlier, *draw_other_body(data, earlier))
        return
    accounts = st.sampled_from(run.account_choices)
    request: dict[str, Any]
    if kind == "credit":
        request = {"account_id": pick(accounts), "amount": pick(st.integers(1, 1_000))}
    elif kind == "debit":
        account_id = pick(accounts)
        request = {"account_id": account_id, "amount": pick(amounts(model.room(account_id)))}
    elif kind == "transfer":
        source, destination = pick(accounts), pick(accounts)
        request = {
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": pick(amounts(model.room(source))),
        }
    elif kind == "hold":
        account_id = pick(accounts)
        request = {"account_id": account_id, "amount": pick(amounts(model.room(account_id)))}
        destination = pick(st.one_of(st.none(), accounts), label="destination")
        if destination is not None:
            request["destination_account_id"] = destination
    elif kind == "reversal":
        request = {"reverses": pick(run.reversible(), label="reversed")}
        move = model.moves.get(request["reverses"])
        remaining = move.amount - move.reversed if move else 0
        amount = pick(capture_amounts(remaining), label="reversal amount")
        if amount is not None:
            request["amount"] = amount
    else:
        request = {"hold_id": pick(run.holds(), label="hold")}
        if kind == "capture":
            hold = model.holds.get(request["hold_id"])
            remaining = hold.remaining if hold else 0
            amount = pick(capture_amounts(remaining), label="capture amount")
            final = pick(st.sampled_from([None, True, False]), label="final")
            if amount is not None:
                request["amount"] = amount
            if final is not None:
                request["final"] = final
    if pick(st.integers(0, 3), label="with metadata") == 0:
        request["metadata"] = pick(METADATA, label="metadata")
    run.run_new(kind, request)


def draw_other_body(data: Any, earlier: Submitted) -> tuple[str, dict[str, Any]]:
    """Another valid body (or type) for an earlier operation's id."""
    kind, request = earlier.kind, dict(earlier.request)
    if "metadata" in request and data.draw(st.booleans(), label="change the metadata"):
        return kind, {**request, "metadata": {"changed": request["metadata"]}}
    if kind == "reversal":
        return kind, {**request, "amount": request.get("amount", 0) + 1}
    if kind in ("credit", "debit"):
        if data.draw(st.booleans(), label="change the type"):
            return ("debit" if kind == "credit" else "credit"), request
        return kind, {**request, "amount": request["amount"] + 1}
    if kind in ("transfer", "hold"):
        return kind, {**request, "amount": request["amount"] + 1}
    changes = ["hold", "type", "amount", "final"] if kind == "capture" else ["hold", "type"]
    change = data.draw(st.sampled_from(changes), label="change")
    if change == "hold":
        return kind, {**request, "hold_id": f"{request['hold_id']}x"}
    if change == "type":
        return ("release" if kind == "capture" else "capture"), {"hold_id": request["hold_id"]}
    if change == "amount":
        return kind, {**request, "amount": request.get("amount", 0) + 1}
    return kind, {**request, "final": not request.get("final", True)}


def test_the_service_agrees_with_the_reference_model_step_by_step(
    client: Client, settings: Settings, new_id: Any, metrics: dict[str, str]
) -> None:
    examples = itertools.count()
    seen: Counter[str] = Counter()

    @hypothesis_settings(
        max_examples=MODEL_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def random_sequence(data: Any) -> None:
        run = ModelRun(client, new_id(f"m{next(examples)}"), seen)
        run.open_accounts()
        run.run_new("credit", {"account_id": run.usd[0], "amount": 1_000})
        run.run_new("credit", {"account_id": run.usd[1], "amount": 500})
        run.run_new("credit", {"account_id": run.eur, "amount": 500})
        for _ in range(data.draw(st.integers(STEPS_MIN, STEPS_MAX), label="steps")):
            draw_step(data, run)
        assert_service_state_matches(client, run.model)

    started = time.monotonic()
    random_sequence()
    metrics["model run"] = (
        f"{next(examples)} examples, {sum(seen.values())} checked submissions "
        f"in {time.monotonic() - started:.1f}s: {dict(sorted(seen.items()))}"
    )
    missing = OUTCOMES_TO_COVER - {key.split()[-1] for key in seen}
    assert not missing, f"the examples never produced {missing}: {seen}"
    assert_audit_passes(settings)


# -- 2. a concurrent workload, replayed in ledger order ---------------------------------


@dataclass(frozen=True)
class Send:
    operation_id: str
    kind: str
    request: dict[str, Any]


def random_workload(rng: random.Random, accounts: list[str], new_id: Any, count: int) -> list[Send]:
    """`count` sends of every kind; repeats reuse an earlier id with the same or another body."""
    sends: list[Send] = []
    holds: list[str] = []
    kinds = [
        *("credit", "debit", "transfer", "hold", "capture", "release", "reversal"),
        *("repeat", "conflict"),
    ]
    weights = [12, 14, 20, 18, 16, 8, 8, 7, 5]
    movers: list[str] = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        if kind in ("capture", "release") and not holds:
            kind = "hold"
        if kind in ("repeat", "conflict"):
            if not sends:
                continue
            earlier = rng.choice(sends)
            if kind == "repeat":
                sends.append(earlier)
            else:
                sends.append(Send(earlier.operation_id, *other_body(rng, earlier)))
            continue
        operation_id = new_id(f"op{n:04d}")
        request: dict[str, Any]
        if kind in ("credit", "debit"):
            request = {"account_id": rng.choice(accounts), "amount": rng.randint(1, 600)}
        elif kind == "transfer":
            request = {
                "source_account_id": rng.choice(accounts),
                "destination_account_id": rng.choice(accounts),
                "amount": rng.randint(1, 600),
            }
        elif kind == "hold":
            request = {"account_id": rng.choice(accounts), "amount": rng.randint(1, 600)}
            if rng.random() < 0.4:
                request["destination_account_id"] = rng.choice(accounts)
            holds.append(operation_id)
        elif kind == "reversal":
            if not movers:
                continue
            # Often a recent one, so that reversals race the operation's own application.
            request = {"reverses": rng.choice(movers[-4:] if rng.random() < 0.5 else movers)}
            if rng.random() < 0.6:
                request["amount"] = rng.randint(1, 400)
            if rng.random() < 0.3:
                request["metadata"] = {"reason": rng.choice(["refund", "chargeback"])}
        else:
            # Often the newest hold or a recent one, so that captures and releases race
            # the hold's own application.
            roll = rng.random()
            request = {
                "hold_id": rng.choice(
                    holds[-1:] if roll < 0.3 else holds[-6:] if roll < 0.6 else holds
                )
            }
            if kind == "capture":
                if rng.random() < 0.6:
                    request["amount"] = rng.randint(1, 300)
                final = rng.choice([None, True, False, False])
                if final is not None:
                    request["final"] = final
        if kind in ("credit", "debit", "transfer", "capture"):
            movers.append(operation_id)
        sends.append(Send(operation_id, kind, request))
    return sends


def other_body(rng: random.Random, earlier: Send) -> tuple[str, dict[str, Any]]:
    request = dict(earlier.request)
    if earlier.kind == "reversal":
        return earlier.kind, {**request, "amount": request.get("amount", 0) + 1}
    if earlier.kind in ("capture", "release"):
        return earlier.kind, {**request, "hold_id": f"{request['hold_id']}x"}
    if earlier.kind in ("credit", "debit") and rng.random() < 0.5:
        return ("debit" if earlier.kind == "credit" else "credit"), request
    return earlier.kind, {**request, "amount": request["amount"] + 1}


def test_a_concurrent_random_workload_keeps_every_rule_and_replays_in_ledger_order(
    client: Client, engine: Any, settings: Settings, new_id: Any, metrics: dict[str, str]
) -> None:
    rng = random.Random(20261125)
    limits = {new_id(f"acct{i}"): rng.choice([0, 0, 100, 500]) for i in range(CONCURRENT_ACCOUNTS)}
    accounts = list(limits)
    model = Model()
    for account_id, limit in limits.items():
        client.create_account(account_id, "USD", overdraft_limit=limit)
        model.open(account_id, "USD", limit)
    opening = [
        Send(new_id(f"open{i}"), "credit", {"account_id": a, "amount": 1_000})
        for i, a in enumerate(accounts)
    ]
    sends = opening + random_workload(rng, accounts, new_id, CONCURRENT_OPERATIONS)

    answers: dict[str, list[tuple[Send, int]]] = defaultdict(list)
    lock = threading.Lock()

    def send(item: Send) -> None:
        response = submit(client, item.kind, item.operation_id, item.request)
        with lock:
            answers[item.operation_id].append((item, response.status_code))

    started = time.monotonic()
    with ThreadPoolExecutor(SENDER_THREADS) as pool:
        list(pool.map(send, sends))
    ids = list(answers)
    try:
        wait_until(lambda: not pending(engine, ids), SETTLE_TIMEOUT_S, "the workload to settle")
    except TimeoutError:
        stuck = {op: accepted_body(answers[op]) for op in pending(engine, ids)}
        raise AssertionError(f"never left pending (see the worker logs): {stuck}") from None
    elapsed_s = time.monotonic() - started
    metrics["concurrent model run"] = (
        f"{len(sends)} sends ({len(ids)} operations) from {SENDER_THREADS} threads, "
        f"all terminal in {elapsed_s:.1f}s"
    )

    accepted = assert_idempotent_answers(answers)
    rows = operations_in_ledger_order(engine, ids)
    assert len(rows) == len(ids)
    for row in rows:
        assert (row.type, row.request) == (
            accepted[row.operation_id].kind,
            accepted[row.operation_id].request,
        )
    outcomes = replay(model, rows)
    metrics["concurrent model run"] += f": {dict(sorted(outcomes.items()))}"
    assert_every_rule_holds(client, accounts)
    assert_service_state_matches(client, model)
    assert outcomes["succeeded"] > 0 and outcomes["insufficient_funds"] > 0, outcomes
    assert_audit_passes(settings)


def accepted_body(sent: list[tuple[Send, int]]) -> tuple[str, dict[str, Any]] | None:
    for item, status in sent:
        if status == 202:
            return item.kind, item.request
    return None


def assert_idempotent_answers(answers: dict[str, list[tuple[Send, int]]]) -> dict[str, Send]:
    """Each id was accepted once (202); the other sends got 200 for its body, 409 for another."""
    accepted = {}
    for operation_id, sent in answers.items():
        winners = [item for item, status in sent if status == 202]
        assert len(winners) == 1, (operation_id, sent)
        (winner,) = winners
        for item, status in sent:
            if item is winner:
                continue
            same = (item.kind, item.request) == (winner.kind, winner.request)
            assert status == (200 if same else 409), (operation_id, sent)
        accepted[operation_id] = winner
    return accepted


def replay(model: Model, rows: list[Any]) -> Counter[str]:
    """Apply the operations in ledger order to the model; every recorded outcome must agree.

    One allowance: a capture or release may fail with hold_not_found although
    its hold's operation is earlier in ledger order, because a ledger number is
    taken before its transaction commits and a capture whose hold is not yet
    visible takes no account lock that would make it wait. The same holds for
    a reversal whose operation was still pending when it read it.
    """
    outcomes: Counter[str] = Counter()
    for row in rows:
        recorded = Outcome(row.status, row.error_code, row.balances)
        if row.error_code == "operation_not_reversible":
            # Likewise a reversal whose operation is earlier in ledger order but was
            # still pending when the reversal read it: not reversible, as the contract says.
            assert row.type == "reversal", row
            visible = row.request["reverses"] in model.moves
            outcomes[
                "operation_not_reversible (not yet visible)"
                if visible
                else "operation_not_reversible"
            ] += 1
            continue
        if row.error_code == "hold_not_found":
            assert row.type in ("capture", "release"), row
            expected = Outcome("failed", "hold_not_found")
            assert recorded == expected, row
            visible = row.request["hold_id"] in model.holds
            outcomes["hold_not_found (hold not yet visible)" if visible else "hold_not_found"] += 1
            continue
        expected = model.apply(row.operation_id, row.type, row.request)
        assert recorded == expected, (
            f"{row.operation_id} ({row.type} {row.request}, ledger seq {row.ledger_seq}): "
            f"recorded {recorded}, the replay expects {expected}"
        )
        outcomes[expected.error or expected.status] += 1
    return outcomes


def assert_every_rule_holds(client: Client, accounts: list[str]) -> None:
    for account_id in accounts:
        account = client.account(account_id)
        assert account["available"] == account["posted"] - account["held"], account
        assert account["available"] >= -account["overdraft_limit"], account
        active = 0
        for hold in holds_of(client, account_id):
            assert hold["captured"] >= 0, hold
            assert hold["captured"] + hold["remaining"] <= hold["amount"], hold
            assert hold["status"] in ("active", "captured", "released", "expired"), hold
            assert (hold["status"] == "active") == (hold["remaining"] > 0), hold
            active += hold["remaining"] if hold["status"] == "active" else 0
        assert account["held"] == active, account


def pending(engine: Any, ids: list[str]) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT operation_id FROM operations "
                "WHERE operation_id = ANY(:ids) AND status = 'pending'"
            ),
            {"ids": ids},
        )
        return [row.operation_id for row in rows]


def operations_in_ledger_order(engine: Any, ids: list[str]) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT operation_id, type, status, error_code, request, balances, ledger_seq "
                    "FROM operations WHERE operation_id = ANY(:ids) ORDER BY ledger_seq"
                ),
                {"ids": ids},
            )
        )
