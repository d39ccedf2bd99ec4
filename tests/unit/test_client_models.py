"""The client's typed values read the contract's bodies: operations, balances, events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_client import (
    BalanceAt,
    EventsPrunedError,
    FeedEvent,
    HoldExpired,
    Operation,
    OperationEvent,
    RequestRejected,
)
from billing_client.errors import ApiError, api_error
from billing_client.models import event_from_message


def operation_body(**fields: Any) -> dict[str, Any]:
    return {
        "operation_id": "t-1",
        "type": "transfer",
        "status": "succeeded",
        "request": {"source_account_id": "a", "destination_account_id": "b", "amount": 500},
        "error": None,
        "balances": {"a": {"posted": 0, "held": 0, "available": 0}},
        "accepted_at": "2026-11-24T18:00:00.000000+00:00",
        "completed_at": "2026-11-24T18:00:00.004000+00:00",
        **fields,
    }


def hold_body(**fields: Any) -> dict[str, Any]:
    return {
        "hold_id": "h-1",
        "account_id": "a",
        "destination_account_id": None,
        "amount": 60,
        "captured": 0,
        "remaining": 0,
        "status": "expired",
        "expires_at": "2026-11-24T18:00:01.000000+00:00",
        "created_at": "2026-11-24T18:00:00.000000+00:00",
        **fields,
    }


def test_an_operation_carries_its_metadata_and_what_reversed_it() -> None:
    operation = Operation.from_json(
        operation_body(metadata={"order": {"id": 7}}, reversed=200, reversals=["r-1", "r-2"])
    )
    assert operation.metadata == {"order": {"id": 7}}
    assert operation.reversed == 200 and operation.reversals == ["r-1", "r-2"]


def test_an_operation_of_a_type_that_cannot_be_reversed_has_neither_reversed_nor_reversals() -> (
    None
):
    operation = Operation.from_json(operation_body(type="hold", metadata={}))
    assert operation.reversed is None and operation.reversals is None
    assert operation.metadata == {}


def test_an_operation_of_an_older_service_without_metadata_reads_as_empty_metadata() -> None:
    assert Operation.from_json(operation_body()).metadata == {}


def test_balances_at_a_moment_read_as_integers_and_an_aware_time() -> None:
    body = {"account_id": "a", "posted": 5, "held": 2, "available": 3, "at": "2026-11-24T18:00:00Z"}
    balances = BalanceAt.from_json(body)
    assert (balances.posted, balances.held, balances.available) == (5, 2, 3)
    assert balances.at == datetime(2026, 11, 24, 18, tzinfo=UTC)


def test_an_event_from_the_queue_carries_the_event_seq_of_its_body() -> None:
    operation = event_from_message(
        "operation.transfer.succeeded", "t-1", False, operation_body(event_seq=41)
    )
    expired = event_from_message("hold.expired", "h-1", True, hold_body(event_seq=42))
    assert isinstance(operation, OperationEvent) and operation.event_seq == 41
    assert isinstance(expired, HoldExpired) and expired.event_seq == 42


def test_an_event_without_a_feed_number_has_none() -> None:
    rejected = event_from_message(
        "request.rejected", None, False, {"error": {"code": "validation_error"}, "message": "x"}
    )
    assert isinstance(rejected, RequestRejected) and rejected.event_seq is None
    for odd in ("7", True, 1.5, None):
        event = event_from_message("hold.expired", "h-1", False, hold_body(event_seq=odd))
        assert event.event_seq is None
    assert event_from_message("anything", None, False, "not json").event_seq is None


def test_a_feed_item_is_the_same_typed_event_as_its_copy_on_the_queue() -> None:
    body = operation_body(event_seq=9, metadata={"k": "v"}, reversed=0, reversals=[])
    item = FeedEvent.from_json(
        {
            "event_seq": 9,
            "routing_key": "operation.transfer.succeeded",
            "message_id": "t-1",
            "body": body,
        }
    )
    assert (item.event_seq, item.message_id, item.body) == (9, "t-1", body)
    from_queue = event_from_message("operation.transfer.succeeded", "t-1", False, body)
    assert item.event == from_queue
    assert isinstance(item.event, OperationEvent) and item.event.operation.metadata == {"k": "v"}


def test_an_events_pruned_answer_is_an_events_pruned_error_with_retained_after() -> None:
    error = api_error(410, "events_pruned", "gone", {"retained_after": 1200})
    assert isinstance(error, EventsPrunedError) and isinstance(error, ApiError)
    assert (error.status, error.code, error.retained_after) == (410, "events_pruned", 1200)


def test_an_events_pruned_answer_without_a_readable_retained_after_has_none() -> None:
    for details in (None, {}, {"retained_after": "1200"}, {"retained_after": True}, [1200]):
        error = api_error(410, "events_pruned", "gone", details)
        assert isinstance(error, EventsPrunedError) and error.retained_after is None
