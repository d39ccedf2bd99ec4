"""What the bench sends: the run's accounts, the operation mix, and each operation's request.

Plain standard-library code, so a workload is the same whichever way it is
sent (one POST each, the batch endpoint, or the AMQP intake).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# The kinds a mix may name. Captures and releases are not drawn: every hold
# that succeeds is settled later by the bench itself, with one or the other.
MIX_KINDS = ("transfer", "credit", "debit", "hold")
MIX_DEFAULT = "transfer=100"

# Each operation moves at most this many cents, tiny against the opening
# credit, so transfers and debits do not fail for lack of funds.
amount_max = 100
opening_credit = 10**12
# The batch endpoint takes at most this many operations per request.
batch_size_max = 1_000
# Where a run reads the outcomes: a queue of the bench's own, bound to the
# events exchange, or the service's billing.responses (as its only client).
EVENT_QUEUES = {"own": "the bench's own queue", "responses": "billing.responses"}
EVENT_SOURCES = tuple(EVENT_QUEUES)

HTTP_PATHS = {
    "transfer": "/v1/transfers",
    "credit": "/v1/credits",
    "debit": "/v1/debits",
    "hold": "/v1/holds",
}
ID_LETTERS = {
    "transfer": "t",
    "credit": "c",
    "debit": "d",
    "hold": "h",
    "capture": "k",
    "release": "r",
}


def parse_mix(text: str) -> dict[str, int]:
    """`transfer=80,credit=10,debit=5,hold=5` as weights; ValueError says what is wrong."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        kind, _, weight = part.strip().partition("=")
        if kind not in MIX_KINDS:
            raise ValueError(f"unknown operation {kind!r}: use {', '.join(MIX_KINDS)}")
        if not weight.isdigit():
            raise ValueError(f"{kind} needs a whole-number weight, as in {kind}=10")
        weights[kind] = weights.get(kind, 0) + int(weight)
    if not any(weights.values()):
        raise ValueError("the mix needs at least one positive weight")
    return {kind: weight for kind, weight in weights.items() if weight}


@dataclass(frozen=True, slots=True)
class Submission:
    """One operation to submit: its type, id and fields (`hold_id` for a capture or release)."""

    operation_id: str
    type: str
    fields: dict[str, Any]
    via_amqp: bool = False

    def http_path(self) -> str:
        if self.type in ("capture", "release"):
            return f"/v1/holds/{self.fields['hold_id']}/{self.type}"
        return HTTP_PATHS[self.type]

    def http_body(self) -> dict[str, Any]:
        body = {"operation_id": self.operation_id, **self.fields}
        body.pop("hold_id", None)
        return body

    def message(self) -> dict[str, Any]:
        """The body of a batch item and of an AMQP intake message."""
        return {"type": self.type, "operation_id": self.operation_id, **self.fields}


@dataclass
class Workload:
    """Draws the run's operations: the mix over its accounts, plus settling its own holds.

    `hot` > 0 makes every transfer touch one of the first `hot` accounts (as
    source or destination, at random); the other side is drawn uniformly.
    """

    run_id: str
    mix: dict[str, int]
    accounts: int
    hot: int = 0
    amqp_share: float = 0.0
    seed: int | None = None
    holds_to_settle: deque[str] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._kinds = list(self.mix)
        self._weights = list(self.mix.values())
        # A mix of one kind draws no kind (`choices` was 7% of the bench's CPU).
        self._only_kind = self._kinds[0] if len(self._kinds) == 1 else None
        self._sequence = 0
        self.account_ids = [f"{self.run_id}-a{i}" for i in range(self.accounts)]

    def opening_credits(self) -> list[Submission]:
        return [
            Submission(f"{self.run_id}-o{i}", "credit", {"account_id": a, "amount": opening_credit})
            for i, a in enumerate(self.account_ids)
        ]

    def draw(self) -> Submission:
        """The next operation: a settlement when a hold of the run awaits one, else the mix."""
        if self.holds_to_settle:
            hold_id = self.holds_to_settle.popleft()
            kind = self._rng.choice(("capture", "release"))
            fields: dict[str, Any] = {"hold_id": hold_id}
        else:
            kind = self._only_kind or self._rng.choices(self._kinds, self._weights)[0]
            fields = self._fields(kind)
        self._sequence += 1
        operation_id = f"{self.run_id}-{ID_LETTERS[kind]}{self._sequence}"
        via_amqp = self.amqp_share > 0 and self._rng.random() < self.amqp_share
        return Submission(operation_id, kind, fields, via_amqp)

    def _fields(self, kind: str) -> dict[str, Any]:
        amount = self._rng.randint(1, amount_max)
        if kind == "transfer":
            source, destination = self._transfer_pair()
            return {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": amount,
            }
        account = self._rng.randrange(self.accounts)
        fields: dict[str, Any] = {"account_id": self.account_ids[account], "amount": amount}
        if kind == "hold" and self._rng.random() < 0.5:
            # Half the holds are two-phase transfers: a capture pays another account.
            fields["destination_account_id"] = self.account_ids[self._other(account)]
        return fields

    def _transfer_pair(self) -> tuple[str, str]:
        first = self._rng.randrange(self.hot) if self.hot else self._rng.randrange(self.accounts)
        pair = (first, self._other(first))
        if self.hot and self._rng.random() < 0.5:
            pair = (pair[1], pair[0])
        return self.account_ids[pair[0]], self.account_ids[pair[1]]

    def _other(self, account: int) -> int:
        """An account drawn uniformly among all but `account`."""
        other = self._rng.randrange(self.accounts - 1)
        return other + 1 if other >= account else other
