"""The service's configuration as the bench reads it: the contract's environment variables.

The bench is a client of the service, so it reads the same public variables
(`BILLING_BROKER_URL`, `BILLING_DATABASE_URL`, `BILLING_API_TOKENS`,
`BILLING_AMQP_PREFIX`, with the same defaults) rather than importing the
service's own settings, and names the exchanges and queues the contract
names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DATABASE_URL_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/billing"
BROKER_URL_DEFAULT = "amqp://guest:guest@127.0.0.1:5672//"

# The contract's names (before the deployment's prefix).
EVENTS_EXCHANGE = "billing.events"
RESPONSES_QUEUE = "billing.responses"
REQUESTS_EXCHANGE = "billing.requests"
REQUESTS_QUEUE = "billing.requests"
REQUESTS_ROUTING_KEY = "operation"


@dataclass(frozen=True)
class Settings:
    database_url: str = DATABASE_URL_DEFAULT
    broker_url: str = BROKER_URL_DEFAULT
    api_tokens: tuple[str, ...] = ()
    amqp_prefix: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        tokens = tuple(t.strip() for t in env.get("BILLING_API_TOKENS", "").split(",") if t.strip())
        # Without blanks around a cluster list's `;` (kombu would take them into the next URL).
        broker_urls = (url.strip() for url in env.get("BILLING_BROKER_URL", "").split(";"))
        return cls(
            database_url=env.get("BILLING_DATABASE_URL") or DATABASE_URL_DEFAULT,
            broker_url=";".join(url for url in broker_urls if url) or BROKER_URL_DEFAULT,
            api_tokens=tokens,
            amqp_prefix=env.get("BILLING_AMQP_PREFIX", "").strip(),
        )

    def amqp_name(self, name: str) -> str:
        """An exchange or queue name with the deployment's prefix (`acme.billing.events`)."""
        return f"{self.amqp_prefix}.{name}" if self.amqp_prefix else name
