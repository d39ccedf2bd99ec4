"""Access to the process's `Services` from inside a request."""

from __future__ import annotations

from typing import Any, cast

import orjson
from flask import Response, current_app
from flask.json.provider import DefaultJSONProvider

from api.errors import validation_error
from billing import gate, limits, untrusted_json
from billing.bootstrap import Services


def services() -> Services:
    return cast(Services, current_app.extensions["billing"])


def path_identifier(value: str, name: str) -> str:
    """An id taken from the URL path, refused like a bad id in a body."""
    problem = gate.identifier_problem(value)
    if problem is not None:
        raise validation_error({name: [problem]})
    return value


def json_response(body: Any, status: int) -> Response:
    """A JSON answer built directly from a body already in its documented shape.

    The route's response schema still documents it; serializing the body
    through that schema again would cost more than the rest of the request.
    """
    response = cast(Response, current_app.json.response(body))
    response.status_code = status
    return response


class FastJSONProvider(DefaultJSONProvider):
    """Flask's JSON: compact answers with orjson underneath, strict request bodies.

    A batch's answer holds up to a thousand operations, and the standard
    library spent more time encoding it than the rest of the request. The
    values are the same (keys sorted, dates and decimals through Flask's own
    conversions, integers beyond 64 bits through the standard library); only
    non-ASCII text is sent as UTF-8 instead of \\u escapes. Bodies (through
    `request.get_json`) are read like the routes' bodies: bounded in size and
    depth, a repeated key refused.
    """

    _options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
    _compact = {"separators": (",", ":")}

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs != self._compact:
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=self._options).decode()
        except TypeError:
            return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """A request body, read like every other (`api.bodies`): a refusal is a ValueError."""
        if kwargs:
            return super().loads(s, **kwargs)
        return untrusted_json.parse(s, bytes_max=limits.request_body_bytes_max)
