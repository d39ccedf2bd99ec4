"""Configuration from the environment, with defaults for a local PostgreSQL and RabbitMQ.

`BILLING_BROKER_URL` may name the nodes of a RabbitMQ cluster, as URLs
separated by `;` (kombu's failover form): every connection the service makes
goes to the first node that answers, in that order, and to the next one when
its node goes away.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from billing import limits

DATABASE_URL_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/billing"
BROKER_URL_DEFAULT = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class Settings:
    database_url: str = DATABASE_URL_DEFAULT
    broker_url: str = BROKER_URL_DEFAULT
    api_tokens: tuple[str, ...] = ()
    amqp_prefix: str = ""
    flower_auth: str = ""
    responses_max_events: int = limits.responses_max_events
    responses_max_bytes: int = limits.responses_max_bytes
    # How long the event feed keeps events (at least the contract's 30 days).
    event_retention_days: int = limits.event_retention_days_min

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        tokens = tuple(t.strip() for t in env.get("BILLING_API_TOKENS", "").split(",") if t.strip())
        return cls(
            database_url=env.get("BILLING_DATABASE_URL") or DATABASE_URL_DEFAULT,
            broker_url=_broker_url(env.get("BILLING_BROKER_URL", "")),
            api_tokens=tokens,
            amqp_prefix=env.get("BILLING_AMQP_PREFIX", "").strip(),
            flower_auth=env.get("BILLING_FLOWER_AUTH", "").strip(),
            responses_max_events=_positive(
                env, "BILLING_RESPONSES_MAX_EVENTS", limits.responses_max_events
            ),
            responses_max_bytes=_positive(
                env, "BILLING_RESPONSES_MAX_BYTES", limits.responses_max_bytes
            ),
            event_retention_days=_retention_days(env.get("BILLING_EVENT_RETENTION_DAYS", "")),
        )

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The broker's nodes, in the order connections try them."""
        return tuple(url.strip() for url in self.broker_url.split(";") if url.strip())

    def amqp_name(self, name: str) -> str:
        """An exchange or queue name with the deployment's prefix (`acme.billing.events`)."""
        return f"{self.amqp_prefix}.{name}" if self.amqp_prefix else name


def api_tokens_problem(tokens: tuple[str, ...]) -> str | None:
    """Why the API must not start with these tokens (never quoting them), or None."""
    if not tokens:
        return (
            "BILLING_API_TOKENS is empty: set at least one token (comma-separated), "
            "e.g. BILLING_API_TOKENS=$(openssl rand -hex 16), so the API can authenticate clients."
        )
    length_min = limits.api_token_length_min_chars
    short = sum(len(token) < length_min for token in tokens)
    if short:
        return (
            f"BILLING_API_TOKENS has {short} of {len(tokens)} tokens shorter than "
            f"{length_min} characters: each must be at least {length_min} characters, "
            "so it cannot be guessed, e.g. $(openssl rand -hex 16)."
        )
    return None


def _broker_url(value: str) -> str:
    """The URL list without blanks around its `;` (kombu would take them into the next URL)."""
    return ";".join(url.strip() for url in value.split(";") if url.strip()) or BROKER_URL_DEFAULT


def _retention_days(value: str) -> int:
    """The event feed's retention in days: the contract's minimum unless set longer.

    A value that is not a whole number of days, or shorter than the contract
    promises, stops the process with the reason rather than pruning events
    a consumer was promised.
    """
    if not value.strip():
        return limits.event_retention_days_min
    least = limits.event_retention_days_min
    if not value.strip().isdigit() or int(value) < least:
        raise ValueError(
            f"BILLING_EVENT_RETENTION_DAYS={value!r}: give a whole number of days, "
            f"at least {least} (the event feed promises its events for {least} days)"
        )
    return int(value)


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number from the environment, or the default when unset."""
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: a positive whole number is needed")
    return int(value)
