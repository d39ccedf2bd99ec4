"""Balances in range: balance_limit_exceeded for client accounts, no limit for the external ones.

Ten accounts are each credited up to `balance_max` (10**18) in a thousand
credits of the largest amount: ten times 10**18 entered the service, more
than PostgreSQL's bigint holds (about 9.2 * 10**18), all of it against the
one external counter-account of USD.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from billing import limits
from billing.config import Settings
from tests.support.stack import Client, environment, wait_until

ACCOUNTS = 10
CREDITS_EACH = limits.balance_max // limits.amount_max


def status_counts(engine: Any, prefix: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM operations WHERE operation_id LIKE :prefix "
                "GROUP BY status"
            ),
            {"prefix": prefix + "%"},
        ).all()
    return {status: count for status, count in rows}


RUN = f"full-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def full_accounts(client: Client, engine: Any) -> list[str]:
    """Ten accounts at exactly balance_max, filled through the batch API."""
    run = RUN
    accounts = [f"{run}-{n}" for n in range(ACCOUNTS)]
    for account in accounts:
        client.create_account(account)
        items = [
            {
                "type": "credit",
                "operation_id": f"{run}-c-{account}-{k}",
                "account_id": account,
                "amount": limits.amount_max,
            }
            for k in range(CREDITS_EACH)
        ]
        response = client.post("/v1/operations/batch", {"operations": items})
        assert response.status_code == 202, response.text
    total = ACCOUNTS * CREDITS_EACH
    wait_until(
        lambda: status_counts(engine, f"{run}-c-").get("succeeded", 0) == total,
        300,
        f"{total} credits to succeed",
        interval_s=0.25,
    )
    return accounts


def test_the_external_account_takes_in_more_than_a_bigint_holds_and_the_audit_passes(
    full_accounts: list[str], client: Client, engine: Any, settings: Settings
) -> None:
    with engine.connect() as connection:
        entered = connection.execute(
            text(
                "SELECT -sum(amount) FROM entries WHERE account_id = '@external:USD' "
                "AND operation_id LIKE :prefix"
            ),
            {"prefix": f"{RUN}-c-%"},
        ).scalar_one()
    assert entered == ACCOUNTS * limits.balance_max > 2**63 - 1
    for account in full_accounts:
        assert client.account(account)["posted"] == limits.balance_max
    # Money still moves against it both ways.
    debit = {"operation_id": f"{full_accounts[0]}-d", "account_id": full_accounts[0], "amount": 1}
    assert client.run("debits", debit)["status"] == "succeeded"
    audit = subprocess.run(
        [sys.executable, "-m", "billing.cli", "audit"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_credit_past_balance_max_fails_with_balance_limit_exceeded_and_changes_nothing(
    full_accounts: list[str], client: Client, new_id: Any
) -> None:
    account = full_accounts[1]
    before = client.account(account)

    outcome = client.run(
        "credits", {"operation_id": new_id("over"), "account_id": account, "amount": 1}
    )

    assert outcome["status"] == "failed"
    assert outcome["error"]["code"] == "balance_limit_exceeded"
    assert client.account(account) == before


def test_a_transfer_or_a_capture_into_a_full_account_fails_with_balance_limit_exceeded(
    full_accounts: list[str], client: Client, new_id: Any
) -> None:
    full = full_accounts[2]
    payer = new_id("payer")
    client.create_account(payer)
    assert (
        client.run("credits", {"operation_id": new_id("c"), "account_id": payer, "amount": 50})[
            "status"
        ]
        == "succeeded"
    )
    transfer = {
        "operation_id": new_id("t"),
        "source_account_id": payer,
        "destination_account_id": full,
        "amount": 10,
    }
    assert client.run("transfers", transfer)["error"]["code"] == "balance_limit_exceeded"
    hold_id = new_id("h")
    hold = {
        "operation_id": hold_id,
        "account_id": payer,
        "amount": 10,
        "destination_account_id": full,
    }
    assert client.run("holds", hold)["status"] == "succeeded"
    capture = client.run(f"holds/{hold_id}/capture", {"operation_id": new_id("k")})
    assert capture["error"]["code"] == "balance_limit_exceeded"
    assert client.account(payer)["posted"] == 50
    assert client.account(payer)["held"] == 10
    assert client.account(full)["posted"] == limits.balance_max
