"""The bench's read mix: which reads it draws, how it follows a cursor, how reads are reported."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from bench.reads import READ_KINDS, ReadMix, ReadTally, next_page_path, read_loop
from bench.report import read_figures, render, summarize
from tests.unit.test_bench_report import PASSED, SETTING, one_client_record


def query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


def test_the_mix_draws_every_first_read_kind_in_turn() -> None:
    mix = ReadMix(["a"], lambda: "op-1", seed=1)
    drawn = [mix.next_kind() for _ in range(10)]
    firsts = [k for k in READ_KINDS if k != "operations_by_account_next_page"]
    assert drawn == firsts + firsts[:5]


def test_each_read_is_a_path_of_the_read_api_on_the_runs_accounts() -> None:
    accounts = ["run-a0", "run-a1"]
    mix = ReadMix(accounts, lambda: "run-t7", seed=1)
    now = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    by_account = mix.path("operations_by_account")
    assert by_account is not None and by_account.startswith("/v1/operations?")
    assert query(by_account)["account_id"][0] in accounts
    assert query(mix.path("operations_by_type") or "") == {
        "type": ["transfer"],
        "status": ["succeeded"],
        "limit": ["20"],
    }
    assert query(mix.path("accounts") or "")["cursor"][0] in accounts
    balances = mix.path("balances_at", now) or ""
    assert urlsplit(balances).path in {f"/v1/accounts/{a}/balances" for a in accounts}
    moment = datetime.fromisoformat(query(balances)["at"][0])
    assert 0 <= (now - moment).total_seconds() <= 60
    assert mix.path("operation") == "/v1/operations/run-t7"


def test_no_operation_to_read_before_one_is_accepted() -> None:
    assert ReadMix(["a"], lambda: None, seed=1).path("operation") is None


def test_the_next_page_follows_the_cursor_of_the_answer() -> None:
    first = "/v1/operations?account_id=a&limit=20"
    answer = b'{"items": [], "next_cursor": "1795543200123456:op-1"}'
    following = next_page_path(first, answer)
    assert following is not None
    assert query(following)["cursor"] == ["1795543200123456:op-1"]
    assert query(following)["account_id"] == ["a"]
    assert next_page_path(first, b'{"items": [], "next_cursor": null}') is None
    assert next_page_path(first, b"not json") is None
    assert next_page_path(first, b"[]") is None


def test_a_reader_reads_until_the_load_is_over_and_tallies_by_kind() -> None:
    asked: list[str] = []
    answers = {
        "/v1/operations": b'{"items": [], "next_cursor": "5:op-1"}',
    }

    async def get(path: str) -> tuple[str, bytes]:
        asked.append(path)
        if "/balances" in path:
            return "422", b"{}"
        return "200", answers.get(urlsplit(path).path, b"{}")

    tally = ReadTally()
    mix = ReadMix(["a"], lambda: "op-9", seed=1)
    asyncio.run(read_loop(get, mix, tally, lambda: len(asked) >= 6))
    kinds = sorted(tally.read_s)
    assert kinds == [
        "accounts",
        "operation",
        "operations_by_account",
        "operations_by_account_next_page",
        "operations_by_type",
    ]
    assert tally.errors == {"balances_at 422": 1}
    assert "cursor=5%3Aop-1" in asked[1]


def test_reads_are_reported_by_kind_with_their_quantiles() -> None:
    tally = ReadTally()
    for n in range(100):
        tally.answered("balances_at", "200", (n + 1) / 1000)
    tally.answered("operation", "503", 0.001)
    figures = read_figures(tally, 10.0)
    assert figures["reads"]["balances_at"] == {
        "count": 100,
        "per_s": 10.0,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert figures["read_errors"] == {"operation 503": 1}
    assert read_figures(ReadTally(), 10.0) == {}


def test_the_report_shows_reads_only_when_the_run_had_readers() -> None:
    record = one_client_record()
    assert "reads" not in render(summarize(record, SETTING, PASSED))
    record.reads.answered("balances_at", "200", 0.004)
    shown = render(summarize(record, {**SETTING, "readers": 2}, PASSED))
    assert "balances_at" in shown and "read errors  none" in shown and "2 readers" in shown
