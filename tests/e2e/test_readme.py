"""The README's first session, pasted as written into a shell beside `billing up`.

A newcomer copies the `curl` blocks of the README, from "A first session
with curl" to "Reading the ledger", one after another into a terminal while
`make up` runs. Here they run in bash, unchanged but for the token `billing
up` printed and its port, against a `billing up` with a database and AMQP
prefix of its own. No command may get an HTTP error, every comment that
quotes the answer (`# "reversed":200`) must be in what the commands printed,
and every whole answer the README shows must have come, its times aside.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing.config import Settings
from tests.support import stack
from tests.support.up import start_up, stop_up, up_environment

README = stack.ROOT / "README.md"
FIRST_SESSION = ("## A first session with curl", "## Submitting over AMQP")
TOKEN_LINE = re.compile(r"^export TOKEN=\.\.\..*$", re.MULTILINE)
API_LINE = "API=http://127.0.0.1:8000"
# A comment that quotes the answer: `# "key":value` or `# ..."key":value...`.
QUOTED_ANSWER = re.compile(r"#\s+(?:\.\.\.)?(\"[^#]*?)(?:\.\.\.)?\s*$")


def first_session() -> str:
    """The README's text from "A first session with curl" to "Submitting over AMQP"."""
    text = README.read_text()
    start, end = (text.index(heading) for heading in FIRST_SESSION)
    return text[start:end]


def first_session_script() -> str:
    return "\n".join(re.findall(r"```sh\n(.*?)```", first_session(), re.DOTALL))


def quoted_answers(script: str) -> list[str]:
    return [m.group(1) for line in script.splitlines() if (m := QUOTED_ANSWER.search(line))]


def shown_answers() -> list[dict[str, Any]]:
    """The whole answers the README's first session shows (its `json` blocks)."""
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", first_session(), re.S)]


def printed_answers(printed: str) -> list[Any]:
    """The JSON values the session printed, one after another (curl adds no newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(printed):
        if printed[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(printed, at)
        values.append(value)
    return values


def without_times(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if not (k.endswith("_at") and v is not None)}


def test_the_readme_session_sets_the_token_and_address_and_quotes_answers() -> None:
    script = first_session_script()
    assert TOKEN_LINE.search(script), "the session must start by setting TOKEN"
    assert API_LINE in script
    assert quoted_answers(script), "the session quotes no answer: nothing would be checked"
    assert shown_answers(), "the session shows no answer: nothing would be checked"


@pytest.fixture
def billing_up(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A `billing up` on a database and prefix of its own: its API port and the token it printed."""
    base = stack.make_settings()
    env = up_environment(base.database_url, base.broker_url, tmp_path)
    api_port, flower_port = stack.free_port(), stack.free_port()
    logs = tmp_path / "logs"
    args = ["--port", str(api_port), "--flower-port", str(flower_port), "--log-dir", str(logs)]
    process, output = start_up(args, env)
    try:
        output.wait_for("billing is up", 180)
        yield api_port, output.lines[output.wait_for("token:", 5)].split()[-1]
    finally:
        stop_up(process)
        settings = Settings(
            database_url=base.database_url,
            broker_url=base.broker_url,
            amqp_prefix=env["BILLING_AMQP_PREFIX"],
        )
        stack.drop_database(settings)
        stack.delete_amqp_entities(settings)


def test_the_readme_first_session_answers_as_the_readme_says(
    billing_up: tuple[int, str],
) -> None:
    api_port, token = billing_up
    script = TOKEN_LINE.sub(f"export TOKEN={token}", first_session_script())
    script = script.replace(API_LINE, f"API=http://127.0.0.1:{api_port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    printed = done.stdout
    assert done.returncode == 0, done.stderr + printed
    # An HTTP error's body is {"error": {...}}; an operation's has other keys before its error.
    assert '{"error":{' not in printed, printed
    for answer in quoted_answers(script):
        assert answer in printed, f"the README quotes {answer!r}, the service printed:\n{printed}"
    # Every whole answer it shows came, but for the times (a run of its own has others).
    answers = [without_times(a) for a in printed_answers(printed) if isinstance(a, dict)]
    for shown in shown_answers():
        assert without_times(shown) in answers, (
            f"the README shows {shown}, the service printed:\n{printed}"
        )
