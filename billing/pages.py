"""The values of the read API's query strings: moments (RFC 3339) and page cursors.

A cursor is the keyset position of the last item of a page, written in
plain text like the entries' and holds' cursors (an entry id, a hold
number): it names a place in the order, not a page, so a page read after
writes neither repeats nor skips what was there before. An operations
cursor is `<accepted_at in microseconds since 1970 UTC>:<operation_id>`; an
accounts cursor is the last `account_id`. Any position is a valid cursor
(it only says where to start); a cursor that is not a position (garbage, a
number out of range, an id that cannot exist) is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# RFC 3339's date-time: a time zone is required (`Z` or an offset); a space
# may stand for the `T` (RFC 3339 section 5.6, note); fractions of a second
# beyond microseconds are cut, as PostgreSQL keeps no more.
_MOMENT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,  # digits 0-9 only
)
MOMENT_MESSAGE = "Must be an RFC 3339 date-time with a time zone, e.g. 2026-11-24T18:00:00Z."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An operation's id as stored: a client's id, or the service's own (`@expiry:<hold id>`).
_OPERATION_ID = re.compile(r"@?[A-Za-z0-9._:-]{1,72}\Z")
_OPERATIONS_CURSOR = re.compile(r"(-?[0-9]{1,19}):(.+)\Z", re.DOTALL)
CURSOR_MESSAGE = "Not a valid cursor."


def parse_moment(text: str) -> datetime:
    """The moment an RFC 3339 date-time names, in UTC; ValueError when it names none."""
    match = _MOMENT.match(text)
    if match is None:
        raise ValueError(MOMENT_MESSAGE)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, zulu, sign, offset_h, offset_min = match.group(7, 8, 9, 10, 11)
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    if zulu:
        offset = timedelta(0)
    else:
        if int(offset_h) > 23 or int(offset_min) > 59:
            raise ValueError(MOMENT_MESSAGE)
        offset = timedelta(hours=int(offset_h), minutes=int(offset_min))
        offset = -offset if sign == "-" else offset
    try:
        # A leap second (60) is taken as the last microsecond of its minute.
        local = datetime(year, month, day, hour, minute, min(second, 59), microsecond)
        if second == 60:
            local = local.replace(microsecond=999_999)
        return (local - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError(MOMENT_MESSAGE) from None


def operations_cursor(accepted_at: datetime, operation_id: str) -> str:
    """The cursor after an operation, newest first."""
    micros = (accepted_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}:{operation_id}"


def parse_operations_cursor(cursor: str) -> tuple[datetime, str]:
    """(accepted_at, operation_id) of an operations cursor; ValueError when it is none."""
    match = _OPERATIONS_CURSOR.match(cursor)
    if match is None or _OPERATION_ID.match(match.group(2)) is None:
        raise ValueError(CURSOR_MESSAGE)
    try:
        accepted_at = _EPOCH + timedelta(microseconds=int(match.group(1)))
    except OverflowError:
        raise ValueError(CURSOR_MESSAGE) from None
    return accepted_at, match.group(2)
