"""Access to the process's `Services` from inside a request."""

from __future__ import annotations

import re
from typing import Any, cast

from flask import Response, current_app

from api.errors import validation_error
from billing import limits
from billing.bootstrap import Services

_IDENTIFIER = re.compile(limits.identifier_pattern)


def services() -> Services:
    return cast(Services, current_app.extensions["billing"])


def path_identifier(value: str, name: str) -> str:
    """An id taken from the URL path, refused like a bad id in a body."""
    if not _IDENTIFIER.match(value):
        raise validation_error(
            {name: ["Must be 1 to 64 characters of letters, digits and . _ : -"]}
        )
    return value


def json_response(body: Any, status: int) -> Response:
    """A JSON answer built directly from a body already in its documented shape.

    The route's response schema still documents it; serializing the body
    through that schema again would cost more than the rest of the request.
    """
    response = cast(Response, current_app.json.response(body))
    response.status_code = status
    return response
