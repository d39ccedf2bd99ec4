"""The API refuses to start without tokens long enough to resist guessing, and says why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from api import create_app
from billing import limits
from billing.config import Settings
from tests.support import stack

SHORT = "x" * (limits.api_token_length_min_chars - 1)
LONG_ENOUGH = "y" * limits.api_token_length_min_chars


def start_api(tokens: str) -> subprocess.CompletedProcess[str]:
    """`billing api` with these tokens; it is expected to exit at once."""
    return subprocess.run(
        [sys.executable, "-m", "billing.cli", "api", "--port", str(stack.free_port())],
        env={**os.environ, "BILLING_API_TOKENS": tokens},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "tokens", [SHORT, f"{LONG_ENOUGH},{SHORT}"], ids=["one_short_token", "a_short_one_among_two"]
)
def test_billing_api_refuses_to_start_with_a_short_token_and_says_why(tokens: str) -> None:
    done = start_api(tokens)

    assert done.returncode != 0
    assert f"at least {limits.api_token_length_min_chars} characters" in done.stderr
    assert SHORT not in done.stderr + done.stdout  # a secret is not written to the logs


def test_billing_api_refuses_to_start_without_a_token_and_says_why() -> None:
    done = start_api("")

    assert done.returncode != 0
    assert "BILLING_API_TOKENS is empty" in done.stderr


def test_the_app_is_not_built_with_a_short_token(settings: Settings) -> None:
    short = Settings(database_url=settings.database_url, api_tokens=(LONG_ENOUGH, SHORT))

    with pytest.raises(RuntimeError, match=f"at least {limits.api_token_length_min_chars}"):
        create_app(short)


def test_the_session_tokens_are_long_enough(settings: Settings) -> None:
    assert all(len(t) >= limits.api_token_length_min_chars for t in settings.api_tokens)


def test_a_token_billing_up_makes_is_long_enough() -> None:
    from billing.cli import new_api_token

    tokens = {new_api_token() for _ in range(10)}
    assert len(tokens) == 10
    assert all(len(t) >= limits.api_token_length_min_chars for t in tokens)
