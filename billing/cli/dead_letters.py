"""`billing dead-letters`: list and replay the messages in the dead-letter queues."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from billing import limits
from billing.config import Settings

if TYPE_CHECKING:
    from billing.adapters.dead_letters import DeadLetter, Replay

QUEUE_OPTION = click.option(
    "--queue",
    "which",
    type=click.Choice(["tasks", "requests"]),
    default="tasks",
    show_default=True,
    help="billing.tasks.dead (Celery tasks) or billing.requests.dead (the AMQP intake)",
)
ID_OPTION = click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="ID",
    help="only the messages with this Celery task id or operation_id (repeatable)",
)


@click.group("dead-letters")
def dead_letters() -> None:
    """Inspect and replay dead-lettered messages (billing.tasks.dead, billing.requests.dead)."""


@dead_letters.command("list")
@QUEUE_OPTION
@ID_OPTION
@click.option(
    "--limit",
    type=click.IntRange(1, limits.dead_letter_scan_max),
    default=limits.dead_letter_list_default,
    show_default=True,
    help="show at most N messages, in queue order (those shown go behind the rest)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
def list_command(which: str, ids: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Show the messages of a dead-letter queue and why they died; nothing is removed."""
    from billing.adapters.dead_letters import dead_letter_queue, list_dead_letters

    settings = Settings.from_env()
    name = dead_letter_queue(settings, which)
    with _broker_errors():
        depth, letters = list_dead_letters(settings, which, limit=limit, ids=ids)
    if as_json:
        document = {"queue": name, "depth": depth, "messages": [m.to_json() for m in letters]}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"{name}: {depth} message(s), showing {len(letters)} in queue order")
    for letter in letters:
        click.echo("")
        click.echo(_describe(letter))


def _describe(letter: DeadLetter) -> str:
    died_at = letter.x_death[0].get("time") if letter.x_death else None
    if letter.reason:
        why = f"{letter.reason} in {letter.died_in}, dead-lettered {letter.deaths}x since "
        why += f"{died_at} (first death: {letter.first_death_reason})"
    else:
        why = f"parked by the service: {letter.rejection or 'no x-death header'}"
    origin = letter.origin
    lines = [
        f"#{letter.position}  {why}",
        f"    from     exchange {origin.exchange!r}, routing key {origin.routing_key!r}"
        if origin
        else "    from     unknown (no x-death header): cannot be replayed",
        f"    message  {_identify(letter)}",
        f"    content  {letter.content_type or 'no content type'}, {letter.size_bytes} bytes, "
        f"x-delivery-count {letter.delivery_count}",
        f"    body     {letter.body}{'...' if letter.body_truncated else ''}",
    ]
    return "\n".join(lines)


def _identify(letter: DeadLetter) -> str:
    parts = []
    if letter.task:
        parts.append(f"task {letter.task} id {letter.task_id}")
    if letter.operation_ids:
        shown = ", ".join(letter.operation_ids[:3])
        more = len(letter.operation_ids) - 3
        parts.append(f"operation {shown}" + (f" (+{more} more)" if more > 0 else ""))
    if letter.args:
        parts.append(f"args {letter.args}")
    if not parts and letter.message_id:
        parts.append(f"message_id {letter.message_id}")
    return "  ".join(parts) or "-"


@dead_letters.command()
@QUEUE_OPTION
@ID_OPTION
@click.option("--limit", type=click.IntRange(min=1), help="replay at most N messages")
@click.option("--dry-run", is_flag=True, help="show what would move; move nothing")
def replay(which: str, ids: tuple[str, ...], limit: int | None, dry_run: bool) -> None:
    """Publish dead messages again to the exchange and routing key they came from.

    Each dead message is acknowledged only after the broker confirmed its
    copy, so nothing is lost if the command dies midway. A message that
    failed for good (a poison message) is dead-lettered again: that is safe.
    """
    from billing.adapters.dead_letters import replay_dead_letters

    settings = Settings.from_env()
    with _broker_errors():
        tally = replay_dead_letters(
            settings, which, ids=ids, limit=limit, dry_run=dry_run, on_step=_progress()
        )
    left = tally.scanned - tally.replayed - tally.skipped - tally.unroutable
    if dry_run:
        click.echo(f"dry run: would replay {tally.replayed} message(s); nothing was moved")
    else:
        click.echo(f"replayed {tally.replayed} message(s) from {tally.queue}")
    click.echo(
        f"looked at {tally.scanned} of {tally.depth}: {tally.skipped} without x-death and "
        f"{tally.unroutable} unroutable stay in the queue, {left} did not match"
    )
    if tally.unroutable:
        raise click.ClickException(
            "some messages had no queue to go back to (is the service's topology declared?)"
        )


def _progress() -> Callable[[Replay, str, DeadLetter], None]:
    started = time.monotonic()

    def on_step(tally: Replay, step: str, letter: DeadLetter) -> None:
        click.echo(f"{step:<13} #{letter.position}  {_identify(letter)}  {_where(step, letter)}")
        done = tally.replayed + tally.skipped + tally.unroutable
        if done % limits.dead_letter_progress_every == 0:
            rate = done / max(time.monotonic() - started, 1e-6)
            click.echo(
                f"... {tally.scanned}/{tally.depth} looked at, {tally.replayed} "
                f"{'would move' if tally.dry_run else 'replayed'}, "
                f"{tally.skipped + tally.unroutable} left in place ({rate:.0f}/s)",
                err=True,
            )

    return on_step


def _where(step: str, letter: DeadLetter) -> str:
    if letter.origin is None:
        return f"(no x-death header, {letter.rejection or 'not dead-lettered by the broker'})"
    target = f"exchange {letter.origin.exchange!r}, routing key {letter.origin.routing_key!r}"
    if step == "unroutable":
        return f"(no queue took the copy at {target}; left in place)"
    return f"-> {target}"


@contextmanager
def _broker_errors() -> Iterator[None]:
    from billing.adapters.dead_letters import BrokerFailure, DeadLetterQueueMissing

    try:
        yield
    except DeadLetterQueueMissing as error:
        raise click.ClickException(f"{error}: is BILLING_AMQP_PREFIX right?") from error
    except BrokerFailure as error:
        raise click.ClickException(
            f"the broker failed the run ({error}); every message not reported as replayed "
            "is still in the dead-letter queue"
        ) from error
