"""Which Authorization headers `token_is_valid` accepts."""

from __future__ import annotations

import pytest

from api.auth import token_is_valid

TOKENS = ("first-token", "second-token")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer first-token", id="first_token"),
        pytest.param("Bearer second-token", id="second_token"),
        pytest.param("bearer first-token", id="lower_case_scheme"),
        pytest.param("BEARER first-token", id="upper_case_scheme"),
        pytest.param("Bearer  first-token ", id="spaces_around_the_token"),
    ],
)
def test_a_configured_token_after_the_bearer_scheme_is_valid(header: str) -> None:
    assert token_is_valid(header, TOKENS)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="no_header"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme_alone"),
        pytest.param("Bearer ", id="scheme_and_a_space"),
        pytest.param("Bearer    ", id="scheme_and_spaces"),
        pytest.param("first-token", id="token_without_scheme"),
        pytest.param("Basic first-token", id="basic_scheme"),
        pytest.param("Token first-token", id="other_scheme"),
        pytest.param("Bearerfirst-token", id="no_space_after_scheme"),
        pytest.param("Bearer wrong-token", id="unknown_token"),
        pytest.param("Bearer first-tokenx", id="token_with_a_suffix"),
        pytest.param("Bearer first-toke", id="token_missing_its_last_character"),
        pytest.param("Bearer FIRST-TOKEN", id="token_in_other_case"),
        pytest.param("Bearer first-token second-token", id="two_tokens"),
        pytest.param("Bearer tökén", id="non_ascii_token"),
    ],
)
def test_anything_else_is_not_valid(header: str | None) -> None:
    assert not token_is_valid(header, TOKENS)


def test_no_token_is_valid_when_none_are_configured() -> None:
    assert not token_is_valid("Bearer first-token", ())


def test_an_empty_configured_token_never_matches_an_empty_credential() -> None:
    assert not token_is_valid("Bearer ", ("",))
    assert not token_is_valid("Bearer", ("",))
