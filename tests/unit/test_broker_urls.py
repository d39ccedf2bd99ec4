"""`BILLING_BROKER_URL` may list a cluster's nodes, separated by `;`."""

from __future__ import annotations

import pytest

from billing.cli import broker_api_url
from billing.config import Settings


def test_settings_take_a_list_of_broker_urls_in_order_without_blanks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_BROKER_URL", " amqp://a:1// ; amqp://b:2//;;amqp://c:3// ")
    settings = Settings.from_env()
    assert settings.broker_url == "amqp://a:1//;amqp://b:2//;amqp://c:3//"
    assert settings.broker_urls == ("amqp://a:1//", "amqp://b:2//", "amqp://c:3//")


def test_flowers_broker_api_is_the_first_nodes_management_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BILLING_BROKER_API_URL", raising=False)
    settings = Settings(broker_url="amqp://u:p@node-a:5672//;amqp://u:p@node-b:5672//")
    assert broker_api_url(settings) == "http://u:p@node-a:15672/api/"
