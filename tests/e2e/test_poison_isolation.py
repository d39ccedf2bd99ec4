"""One operation never holds back another: one the service cannot apply ends failed alone.

The database is made to refuse one operation's entries (a trigger, as a
defect or data it cannot store would): that operation ends `failed` with
`internal_error` after a bounded number of attempts, logged and counted,
and the operation sent in the same task is applied as if it had not been
there. The recovery sweep's resends are bounded the same way.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from billing import limits
from billing.config import Settings
from tests.conftest import Workers
from tests.support import refusals
from tests.support.stack import Client, EventLog, wait_until
from tests.support.tasks import send_task

INTERNAL_ERRORS = "billing_operations_internal_error_total"


def internal_errors(api_url: str, kind: str) -> float:
    response = requests.get(f"{api_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == INTERNAL_ERRORS and sample.labels.get("type") == kind
    )


def logged_as_error(workers: Workers, operation_id: str) -> bool:
    for process in workers.processes:
        for line in process.log_path.read_text(errors="replace").splitlines():
            if operation_id in line and line.startswith("{"):
                entry = json.loads(line)
                if entry.get("level") == "error" and operation_id in entry.get("message", ""):
                    return True
    return False


def test_an_operation_the_database_refuses_fails_alone_and_its_batch_neighbour_succeeds(
    client: Client,
    events: EventLog,
    engine: Any,
    workers: Workers,
    api_url: str,
    new_id: Any,
) -> None:
    account = new_id("poison")
    client.create_account(account)
    refused, innocent = new_id("refused"), new_id("innocent")
    counted_before = internal_errors(api_url, "credit")
    refusals.refuse(engine, "entries", refused)
    try:
        response = client.post(
            "/v1/operations/batch",
            {
                "operations": [
                    {"type": "credit", "operation_id": refused, "account_id": account, "amount": 7},
                    {
                        "type": "credit",
                        "operation_id": innocent,
                        "account_id": account,
                        "amount": 5,
                    },
                ]
            },
        )
        assert response.status_code == 202, response.text
        failed = client.wait(refused, timeout_s=60)
        succeeded = client.wait(innocent, timeout_s=60)
    finally:
        refusals.allow(engine, "entries", refused)

    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "internal_error"
    assert "balances" not in failed
    assert succeeded["status"] == "succeeded"
    assert client.account(account)["posted"] == 5
    seen = events.wait_for([refused, innocent])
    assert seen[refused][0]["routing_key"] == "operation.credit.failed"
    assert internal_errors(api_url, "credit") >= counted_before + 1
    wait_until(lambda: logged_as_error(workers, refused), 10, "the error line naming it")


def insert_stuck(engine: Any, operation_id: str, account: str, resends: int) -> None:
    """An accepted credit whose tasks were lost, as if the sweep had sent it `resends` times."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO operations (operation_id, type, request, accepted_at, resent_at, "
                "resends) VALUES (:id, 'credit', CAST(:request AS jsonb), "
                "now() - interval '1 hour', now() - interval '1 hour', :resends)"
            ),
            {
                "id": operation_id,
                "request": json.dumps({"account_id": account, "amount": 9}),
                "resends": resends,
            },
        )


def test_the_sweep_resends_an_operation_a_bounded_number_of_times_then_ends_it_failed(
    settings: Settings, client: Client, events: EventLog, engine: Any, new_id: Any
) -> None:
    account = new_id("sweep")
    client.create_account(account)
    resent_enough, lost = new_id("resent-enough"), new_id("lost")
    insert_stuck(engine, resent_enough, account, limits.pending_resends_max)
    insert_stuck(engine, lost, account, 0)

    send_task(settings, "billing.resend_pending", [])

    given_up = client.wait(resent_enough, timeout_s=60)
    assert given_up["status"] == "failed"
    assert given_up["error"]["code"] == "internal_error"
    assert client.wait(lost, timeout_s=60)["status"] == "succeeded"
    assert client.account(account)["posted"] == 9
    events.wait_for([resent_enough, lost])
