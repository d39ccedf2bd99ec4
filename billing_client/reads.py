"""Reading the ledger and the event feed: the GETs of the Client that list, look back or follow.

Every list is an iterator over all its pages, each page fetched as the
iterator is read (`next_cursor`, or for the feed `next_after`). A moment is
an aware datetime, sent in UTC: a naive one is refused here, as it could
name any of a day's worth of moments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from billing_client import limits
from billing_client.models import Account, BalanceAt, Entry, FeedEvent, Hold, Operation
from billing_client.transport import Transport

T = TypeVar("T")


class Reads:
    """The reading half of `Client` (see client.py), over its transport."""

    _http: Transport

    def entries(
        self, account_id: str, *, page_size: int = limits.page_size_default
    ) -> Iterator[Entry]:
        """The account's ledger entries, newest first, fetched page by page as they are read."""
        return self._pages(f"/v1/accounts/{account_id}/entries", {}, page_size, Entry.from_json)

    def holds(
        self,
        account_id: str,
        *,
        status: str | None = None,
        page_size: int = limits.page_size_default,
    ) -> Iterator[Hold]:
        """The account's holds, newest first, optionally only those of one status."""
        params = {"status": status} if status else {}
        return self._pages(f"/v1/accounts/{account_id}/holds", params, page_size, Hold.from_json)

    def accounts(
        self, *, currency: str | None = None, page_size: int = limits.page_size_default
    ) -> Iterator[Account]:
        """The client accounts by account_id, optionally only those of one currency."""
        params = {"currency": currency} if currency else {}
        return self._pages("/v1/accounts", params, page_size, Account.from_json)

    def balances_at(self, account_id: str, at: datetime) -> BalanceAt:
        """The account's balances as they stood at `at`, an aware datetime not in the future."""
        path = f"/v1/accounts/{account_id}/balances"
        return BalanceAt.from_json(
            self._http.request("GET", path, params={"at": _moment("at", at)})
        )

    def operations(
        self,
        *,
        account_id: str | None = None,
        type: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = limits.page_size_default,
    ) -> Iterator[Operation]:
        """Operations newest first, filtered by any of: involving `account_id` (its holds'
        captures and releases too), of one `type` or `status`, accepted at or after `since`
        and before `until` (aware datetimes)."""
        moments = {
            name: _moment(name, value)
            for name, value in (("since", since), ("until", until))
            if value is not None
        }
        filters = {"account_id": account_id, "type": type, "status": status}
        params = {name: value for name, value in filters.items() if value is not None} | moments
        return self._pages("/v1/operations", params, page_size, Operation.from_json)

    def _pages(
        self,
        path: str,
        params: dict[str, Any],
        page_size: int,
        parse: Callable[[dict[str, Any]], T],
    ) -> Iterator[T]:
        cursor: str | None = None
        while True:
            query = {**params, "limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self._http.request("GET", path, params=query)
            for item in page["items"]:
                yield parse(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # The event feed

    def events(
        self, after: int = 0, *, page_size: int = limits.page_size_max
    ) -> Iterator[FeedEvent]:
        """Every event after the `event_seq` `after`, oldest first, page after page (each
        fetched as the iterator is read) until a page comes empty: the feed's end for now.

        Raises EventsPrunedError when the events right after `after` are no longer kept.
        """
        while True:
            params = {"after": after, "limit": page_size}
            page = self._http.request("GET", "/v1/events", params=params)
            if not page["items"]:
                return
            for item in page["items"]:
                yield FeedEvent.from_json(item)
            after = page["next_after"]


def _moment(name: str, value: datetime) -> str:
    """`value` as the RFC 3339 text the API reads, in UTC; a naive datetime names no moment."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(
            f"{name} must be an aware datetime (with a time zone, e.g. datetime.now(UTC)): "
            f"the naive {value.isoformat()} names no moment"
        )
    return value.astimezone(UTC).isoformat()
