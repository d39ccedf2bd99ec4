"""Bearer-token authentication for the `/v1` routes, compared in constant time."""

from __future__ import annotations

import hmac

from flask import request
from werkzeug.exceptions import Unauthorized


def token_is_valid(header: str | None, tokens: tuple[str, ...]) -> bool:
    # The scheme is case-insensitive (RFC 7235, section 2.1): "bearer" is "Bearer".
    scheme, _, credentials = (header or "").partition(" ")
    presented = credentials.strip().encode()
    if scheme.lower() != "bearer" or not presented:
        return False
    valid = False
    for token in tokens:
        # Compare against every token, so the time taken says nothing about which matched.
        valid |= hmac.compare_digest(presented, token.encode())
    return valid


def require_token(tokens: tuple[str, ...]) -> None:
    if request.path.startswith("/v1") and not token_is_valid(
        request.headers.get("Authorization"), tokens
    ):
        raise Unauthorized()
