"""The HTTP client: one method per operation, accounts, and `wait` (the reads in reads.py).

Every operation carries an `operation_id`, made here when the caller gives
none, so a request that meets a connection error or a 503 can be sent again
as it was: the service applies an operation id at most once, and answers a
repeat with the operation as it stands.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from billing_client import limits
from billing_client.errors import WaitTimeout
from billing_client.models import Account, BatchItem, Operation, Status
from billing_client.reads import Reads
from billing_client.transport import Transport


def new_operation_id() -> str:
    """A fresh operation id (`op-` and 32 hex digits), within the contract's 64 characters."""
    return f"op-{uuid.uuid4().hex}"


class Client(Reads):
    """A client of the billing service's HTTP API.

    >>> client = Client("http://127.0.0.1:8000", token)
    >>> operation = client.credit("alice", 500)
    >>> client.wait(operation.operation_id).succeeded
    True
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        attempts_max: int = limits.request_attempts_max,
        timeout_s: float = limits.request_timeout_s,
        session: requests.Session | None = None,
    ) -> None:
        self._http = Transport(
            url, token, attempts_max=attempts_max, timeout_s=timeout_s, session=session
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Accounts

    def create_account(
        self,
        account_id: str,
        currency: str,
        *,
        overdraft_limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Account:
        """Create an account, or return it when it exists with the same currency and limit."""
        body: dict[str, Any] = {"account_id": account_id, "currency": currency}
        if overdraft_limit is not None:
            body["overdraft_limit"] = overdraft_limit
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return Account.from_json(self._http.request("POST", "/v1/accounts", json=body))

    def account(self, account_id: str) -> Account:
        return Account.from_json(self._http.request("GET", f"/v1/accounts/{account_id}"))

    # Operations: each returns the operation as accepted (pending), or as it
    # stands when the same operation_id was accepted before. `metadata` (a JSON
    # object, at most 4 KiB) is kept with the operation and returned in it and
    # its events; it is part of the body a repeated operation_id is compared with.

    def credit(
        self,
        account_id: str,
        amount: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        fields = {"account_id": account_id, "amount": amount}
        return self._submit("/v1/credits", operation_id, metadata, **fields)

    def debit(
        self,
        account_id: str,
        amount: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        fields = {"account_id": account_id, "amount": amount}
        return self._submit("/v1/debits", operation_id, metadata, **fields)

    def transfer(
        self,
        source_account_id: str,
        destination_account_id: str,
        amount: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        return self._submit(
            "/v1/transfers",
            operation_id,
            metadata,
            source_account_id=source_account_id,
            destination_account_id=destination_account_id,
            amount=amount,
        )

    def hold(
        self,
        account_id: str,
        amount: int,
        *,
        destination_account_id: str | None = None,
        expires_in_s: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        """Block money; the hold's id is the operation id. With a destination, a two-phase
        transfer; `expires_in_s` releases the hold that long after it applied."""
        fields: dict[str, Any] = {"account_id": account_id, "amount": amount}
        if destination_account_id is not None:
            fields["destination_account_id"] = destination_account_id
        if expires_in_s is not None:
            fields["expires_in"] = expires_in_s
        return self._submit("/v1/holds", operation_id, metadata, **fields)

    def capture(
        self,
        hold_id: str,
        *,
        amount: int | None = None,
        final: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        """Take `amount` (default: all that remains) of a hold; `final=False` keeps it active."""
        fields: dict[str, Any] = {}
        if amount is not None:
            fields["amount"] = amount
        if final is not None:
            fields["final"] = final
        return self._submit(f"/v1/holds/{hold_id}/capture", operation_id, metadata, **fields)

    def release(
        self,
        hold_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        return self._submit(f"/v1/holds/{hold_id}/release", operation_id, metadata)

    def reverse(
        self,
        reverses: str,
        *,
        amount: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation_id: str | None = None,
    ) -> Operation:
        """Move back `amount` (default: all that remains reversible) of a succeeded credit,
        debit, transfer or capture."""
        fields: dict[str, Any] = {"reverses": reverses}
        if amount is not None:
            fields["amount"] = amount
        return self._submit("/v1/reversals", operation_id, metadata, **fields)

    def batch(self, operations: Sequence[Mapping[str, Any]]) -> list[BatchItem]:
        """Submit operations (`{"type": "credit", "account_id": ..., ...}`) in one request.

        An item without an `operation_id` gets one, so a resent batch is the
        same batch. Each item has its own result, in order.
        """
        items = [
            {**item, "operation_id": item.get("operation_id") or new_operation_id()}
            for item in operations
        ]
        answer = self._http.request("POST", "/v1/operations/batch", json={"operations": items})
        return [BatchItem.from_json(item) for item in answer["items"]]

    def _submit(
        self,
        path: str,
        operation_id: str | None,
        metadata: Mapping[str, Any] | None,
        **fields: Any,
    ) -> Operation:
        body = {"operation_id": operation_id or new_operation_id(), **fields}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return Operation.from_json(self._http.request("POST", path, json=body))

    def operation(self, operation_id: str) -> Operation:
        return Operation.from_json(self._http.request("GET", f"/v1/operations/{operation_id}"))

    def wait(self, operation_id: str, timeout_s: float = limits.wait_default_s) -> Operation:
        """The operation once it is terminal (succeeded, or failed with its `error`).

        Long-polls the service; raises WaitTimeout if it is still pending after
        `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_s = max(0.0, deadline - time.monotonic())
            wait_s = min(remaining_s, limits.operation_wait_max_s)
            operation = Operation.from_json(
                self._http.request(
                    "GET",
                    f"/v1/operations/{operation_id}",
                    params={"wait": round(wait_s, 3)},
                    extra_timeout_s=wait_s,
                )
            )
            if operation.status is not Status.pending:
                return operation
            if time.monotonic() >= deadline:
                raise WaitTimeout(operation, timeout_s)
