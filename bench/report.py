"""The bench's figures: rates, latency from acceptance to event, failures, its CPU, the audit."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from bench.reads import ReadTally
from bench.runner import Record, pending_ids
from bench.workload import EVENT_QUEUES

pending_sample_size = 5
audit_rows_shown = 3


def summarize(record: Record, setting: dict[str, Any], audit: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run as one JSON-ready object (what `--json` prints)."""
    tally, started = record.tally, record.load_started_at
    completed = {i: record.outcomes[i] for i in tally.accepted_at if i in record.outcomes}
    latencies_s = sorted(
        max(outcome.arrived_at - tally.accepted_at[i], 0.0) for i, outcome in completed.items()
    )
    # From the moment the client sent its POST to the moment the event reached it.
    post_to_event_s = sorted(
        max(outcome.arrived_at - tally.sent_at[i], 0.0)
        for i, outcome in completed.items()
        if i in tally.sent_at
    )
    failures = Counter(o.error_code for o in completed.values() if o.error_code is not None)
    accepted_window_s = max(tally.accepted_at.values(), default=started) - started
    completed_window_s = max((o.arrived_at for o in completed.values()), default=started) - started
    pending = pending_ids(record)
    wall_s = record.drain_ended_at - started
    cpu_s = record.cpu_user_s + record.cpu_system_s
    summary = {
        **setting,
        "load_s": round(record.load_ended_at - started, 3),
        "sent": tally.sent,
        "accepted": len(tally.accepted_at),
        "rejected": dict(tally.rejected),
        "http_requests": tally.requests,
        "http_errors": dict(tally.http_errors),
        "completed": len(completed),
        "succeeded": len(completed) - sum(failures.values()),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "pending": len(pending),
        "pending_sample": pending[:pending_sample_size],
        "accepted_per_s": _rate(len(tally.accepted_at), accepted_window_s),
        "completed_per_s": _rate(len(completed), completed_window_s),
        "latency_ms": _quantiles_ms(latencies_s),
        "post_ms": _quantiles_ms(sorted(tally.post_s)),
        "post_to_event_ms": _quantiles_ms(post_to_event_s),
        "cpu": {
            "user_s": round(record.cpu_user_s, 2),
            "system_s": round(record.cpu_system_s, 2),
            "wall_s": round(wall_s, 2),
            "share_of_wall": round(cpu_s / wall_s, 3) if wall_s > 0 else None,
        },
        "machine_cpu": _machine_cpu(record.machine_cpu_s, len(completed), wall_s),
        "other_events": record.other_events,
        **read_figures(record.reads, record.load_ended_at - started),
        "audit": audit,
        "errors": record.errors,
    }
    # A run that had nothing accepted measured nothing, and says so with its status.
    summary["ok"] = (
        bool(audit["passed"]) and not pending and not record.errors and bool(tally.accepted_at)
    )
    return summary


def read_figures(reads: ReadTally, load_s: float) -> dict[str, Any]:
    """Reads beside the load, by kind: how many, per second, and their latency quantiles."""
    if not reads.read_s and not reads.errors:
        return {}
    by_kind: dict[str, dict[str, float | None]] = {
        kind: {
            "count": len(taken_s),
            "per_s": _rate(len(taken_s), load_s),
            **_quantiles_ms(sorted(taken_s)),
        }
        for kind, taken_s in sorted(reads.read_s.items())
    }
    return {"reads": by_kind, "read_errors": dict(reads.errors)}


def _machine_cpu(
    spent_s: dict[str, float] | None, completed: int, wall_s: float
) -> dict[str, Any] | None:
    """This machine's CPU over the run: cores busy, and ms per completed operation by component."""
    if spent_s is None or wall_s <= 0:
        return None
    per_operation = {
        name: round(1000 * seconds / completed, 3) if completed else None
        for name, seconds in spent_s.items()
        if name != "machine_total"
    }
    return {
        "cores_busy": round(spent_s["machine"] / wall_s, 2),
        "cores": round(spent_s["machine_total"] / wall_s, 2),
        "ms_per_completed": per_operation,
    }


def _describe_machine(machine_cpu: dict[str, Any] | None) -> str:
    if machine_cpu is None:
        return "n/a (no /proc)"
    per_operation = machine_cpu["ms_per_completed"]
    if per_operation["machine"] is None:
        return f"{machine_cpu['cores_busy']:.2f} of {machine_cpu['cores']:.0f} cores busy"
    parts = ", ".join(
        f"{name} {ms:.3f}" for name, ms in per_operation.items() if name != "machine" and ms
    )
    return (
        f"{machine_cpu['cores_busy']:.2f} of {machine_cpu['cores']:.0f} cores busy, "
        f"{per_operation['machine']:.3f} ms per completed operation; by process, ms: {parts} "
        "(every process on this machine, sampled apart from the machine's total)"
    )


def _rate(count: int, window_s: float) -> float:
    return round(count / window_s, 1) if window_s > 0 else 0.0


def _quantiles_ms(sorted_s: list[float]) -> dict[str, float | None]:
    return {
        "p50": _percentile_ms(sorted_s, 0.50),
        "p95": _percentile_ms(sorted_s, 0.95),
        "p99": _percentile_ms(sorted_s, 0.99),
        "max": _percentile_ms(sorted_s, 1.0),
    }


def _percentile_ms(sorted_s: list[float], quantile: float) -> float | None:
    """Nearest-rank percentile, in milliseconds; None when nothing was measured."""
    if not sorted_s:
        return None
    rank = max(math.ceil(quantile * len(sorted_s)), 1)
    return round(sorted_s[rank - 1] * 1000, 2)


def render(summary: dict[str, Any]) -> str:
    """The summary for a person reading a terminal."""
    cpu = summary["cpu"]
    cpu_s = cpu["user_s"] + cpu["system_s"]
    share = f"{cpu['share_of_wall'] * 100:.0f}%" if cpu["share_of_wall"] is not None else "n/a"
    lines = [
        f"billing bench {summary['run_id']}: {_describe(summary)}",
        f"sent         {summary['sent']} operations in {summary['load_s']:.1f} s "
        f"({summary['http_requests']} HTTP requests)",
        f"accepted/s   {summary['accepted_per_s']:.1f}  "
        f"({summary['accepted']} accepted, refused: {_counts(summary['rejected'])})",
        f"completed/s  {summary['completed_per_s']:.1f}  ({summary['completed']} completed: "
        f"{summary['succeeded']} succeeded, {summary['failed']} failed)",
        f"latency      POST answered: {_quantiles(summary['post_ms'])}",
        f"             POST to event: {_quantiles(summary['post_to_event_ms'])}",
        f"             acceptance to event: {_quantiles(summary['latency_ms'])}",
        f"failures     {_counts(summary['failures'])}",
        f"http errors  {_counts(summary['http_errors'])}",
        f"pending      {summary['pending']}"
        + (f"  (e.g. {', '.join(summary['pending_sample'])})" if summary["pending"] else ""),
        f"bench CPU    {cpu_s:.2f} s (user {cpu['user_s']:.2f} + system {cpu['system_s']:.2f}) "
        f"over {cpu['wall_s']:.1f} s wall: {share} of one core",
        f"machine CPU  {_describe_machine(summary['machine_cpu'])}",
        f"events       {_describe_events(summary)}",
        *_read_lines(summary),
        f"audit        {_audit(summary['audit'])}",
    ]
    lines.extend(f"error        {error}" for error in summary["errors"])
    return "\n".join(lines)


def _read_lines(summary: dict[str, Any]) -> list[str]:
    if "reads" not in summary:
        return []
    lines = [
        f"{'reads' if i == 0 else '':<13}{kind:<32} {figures['count']:>6} "
        f"({figures['per_s']:.0f}/s)  {_quantiles(figures)}"
        for i, (kind, figures) in enumerate(summary["reads"].items())
    ]
    return [*lines, f"read errors  {_counts(summary['read_errors'])}"]


def _describe(summary: dict[str, Any]) -> str:
    mode = f"batches of {summary['batch']}" if summary["batch"] else "single operations"
    senders = (
        f"closed loop of {summary['clients']} clients"
        if summary.get("clients")
        else f"concurrency {summary['concurrency']}"
    )
    mix = ",".join(f"{kind}={weight}" for kind, weight in summary["mix"].items())
    hot = f" ({summary['hot']} hot)" if summary["hot"] else " (uniform)"
    rate = f", rate {summary['rate']:g}/s" if summary["rate"] else ""
    rate += f", {summary['readers']} readers" if summary.get("readers") else ""
    amqp = f", {summary['amqp_share']:.0%} over AMQP" if summary["amqp_share"] else ""
    return f"{mode} of {mix} over {summary['accounts']} accounts{hot}, {senders}{rate}{amqp}"


def _describe_events(summary: dict[str, Any]) -> str:
    taken = "taken from it" if summary["events"] == "responses" else "seen"
    return (
        f"read from {EVENT_QUEUES[summary['events']]}; "
        f"{summary['other_events']} events of other operations {taken}"
    )


def _quantiles(quantiles_ms: dict[str, float | None]) -> str:
    return "  ".join(f"{name} {_ms(quantiles_ms[name])}" for name in ("p50", "p95", "p99", "max"))


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{code} {count}" for code, count in counts.items())


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _audit(audit: dict[str, Any]) -> str:
    if audit["passed"]:
        return "passed: every ledger invariant holds"
    if "error" in audit:
        return f"could not run: {audit['error']}"
    parts = []
    for violation in audit["violations"]:
        rows = "; ".join(str(row) for row in violation["rows"][:audit_rows_shown])
        parts.append(f"\n  VIOLATION: {violation['invariant']}: {rows}")
    return "FAILED" + "".join(parts)
