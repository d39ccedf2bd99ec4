"""The client's HTTP transport: one session, retries of connection errors and 503s, error answers.

A request is sent again unchanged, so an operation keeps its
`operation_id` across attempts and the service applies it at most once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

import requests

from billing_client import limits
from billing_client.errors import ApiError, UnavailableError, api_error


class Transport:
    """A session to the API with the bearer token; each request is tried `attempts_max` times."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        attempts_max: int,
        timeout_s: float,
        session: requests.Session | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.attempts_max = attempts_max
        self.timeout_s = timeout_s
        self._session = session or requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        extra_timeout_s: float = 0,
    ) -> Any:
        """Send a request, again with the same body after a connection error or a 503."""
        for attempt in range(1, self.attempts_max + 1):
            last = attempt == self.attempts_max
            try:
                response = self._session.request(
                    method,
                    self.url + path,
                    json=json,
                    params=params,
                    timeout=self.timeout_s + extra_timeout_s,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if last:
                    raise UnavailableError(None, "unavailable", str(error)) from error
                time.sleep(_backoff_s(attempt))
                continue
            if response.status_code == 503 and not last:
                time.sleep(max(_backoff_s(attempt), _retry_after_s(response)))
                continue
            if response.status_code >= 400:
                raise _error_of(response)
            return response.json()
        raise AssertionError("unreachable: the last attempt returns or raises")


def _backoff_s(attempt: int) -> float:
    """The pause after the `attempt`th try: doubling, capped, with jitter so clients spread out."""
    ceiling_s = min(limits.retry_backoff_initial_s * 2 ** (attempt - 1), limits.retry_backoff_max_s)
    return ceiling_s * random.uniform(0.5, 1.0)


def _retry_after_s(response: requests.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", 0)), limits.retry_backoff_max_s)
    except ValueError:
        return 0.0


def _error_of(response: requests.Response) -> ApiError:
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
        return api_error(response.status_code, code, message, error.get("details"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "unexpected_response", response.text[:200])
