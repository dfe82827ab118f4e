"""Fixtures for the webhooks worker's tests: a real receiver on loopback, settings that let
webhooks reach it (``STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE`` and ``_ALLOW_HTTP``, as ``make
run`` sets them), short timeouts and back-offs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from stylequeue.shared.settings import Settings, WebhookSettings
from tests.webhook_receiver import Receiver

LOCAL = WebhookSettings(
    allow_private=True, allow_http=True, timeout_seconds=2.0, backoff_seconds=0.2
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().serving() as serving:
        yield serving


@pytest.fixture
def hsettings(settings: Settings) -> Settings:
    """The test's settings, webhooks allowed to the loopback receiver."""
    return replace(settings, webhooks=LOCAL)


@pytest.fixture
def with_webhooks(hsettings: Settings) -> Callable[..., Settings]:
    def make(**webhooks: object) -> Settings:
        return replace(hsettings, webhooks=replace(hsettings.webhooks, **webhooks))

    return make
