"""Webhook settings, signing and owners' secrets (no HTTP here: tests/hooks has the receiver)."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from stylequeue.cli.admin import webhook_secret
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.settings import SettingsError, WebhookSettings, load_settings
from stylequeue.shared.webhook_secrets import owner_secret, rotate_secret, signing_secrets
from stylequeue.shared.webhook_signing import new_secret, sign, webhook_headers


def test_the_defaults() -> None:
    hooks = load_settings({}).webhooks
    assert hooks == WebhookSettings()
    assert (hooks.secret, hooks.progress_seconds, hooks.allow_private, hooks.allow_http) == (
        None, 5, False, False,
    )  # fmt: skip
    assert (hooks.timeout_seconds, hooks.backoff_seconds, hooks.retry_window_seconds) == (
        10.0, 30.0, 86400,
    )  # fmt: skip


def test_every_webhook_setting_is_read() -> None:
    secret = new_secret()
    hooks = load_settings({
        "STYLEQUEUE_WEBHOOK_SECRET": secret,
        "STYLEQUEUE_WEBHOOK_PROGRESS_SECONDS": "0",
        "STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE": "yes",
        "STYLEQUEUE_WEBHOOK_ALLOW_HTTP": "on",
        "STYLEQUEUE_WEBHOOK_TIMEOUT_SECONDS": "2.5",
        "STYLEQUEUE_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "STYLEQUEUE_WEBHOOK_RETRY_WINDOW_SECONDS": "60",
    }).webhooks  # fmt: skip
    assert hooks == WebhookSettings(secret, 0, True, True, 2.5, 0.2, 60)
    assert secret not in repr(hooks)  # never in a log line


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WEBHOOK_SECRET", "hunter2", "must start with whsec_"),
        ("WEBHOOK_SECRET", "whsec_not base64!", "base64"),
        ("WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"short").decode(), "24 to 64"),
        ("WEBHOOK_PROGRESS_SECONDS", "-1", ">= 0"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0", ">= 0.1"),
        ("WEBHOOK_TIMEOUT_SECONDS", "inf", "finite"),
        ("WEBHOOK_BACKOFF_SECONDS", "soon", "a number"),
        ("WEBHOOK_ALLOW_PRIVATE", "maybe", "WEBHOOK_ALLOW_PRIVATE"),
    ],
)
def test_a_bad_webhook_setting_names_itself(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({f"STYLEQUEUE_{name}": value})
    assert f"STYLEQUEUE_{name}" in str(info.value) and says in str(info.value)


def test_the_cli_makes_a_secret_the_settings_and_the_reference_library_take() -> None:
    result = CliRunner().invoke(webhook_secret, [])
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert load_settings({"STYLEQUEUE_WEBHOOK_SECRET": secret}).webhooks.secret == secret
    body = b'{"event":"completed"}'
    now = int(time.time())
    headers = webhook_headers([secret], "msg_x", now, body)
    assert headers["webhook-signature"] == sign(secret, "msg_x", now, body)
    assert Webhook(secret).verify(body, headers) == {"event": "completed"}


def test_two_first_reads_at_once_make_one_secret(database_url: str) -> None:
    sessions = get_sessionmaker(database_url)
    found: list[str] = []
    start = threading.Barrier(4)

    def read() -> None:
        start.wait()
        with sessions() as session:
            found.append(owner_secret(session, "api:carol").secret)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(found) == 4 and len(set(found)) == 1


def test_whose_secrets_sign(database_url: str) -> None:
    sessions = get_sessionmaker(database_url)
    with sessions() as session:
        first = owner_secret(session, "api:dan").secret
        assert signing_secrets(session, "api:dan", WebhookSettings()) == [first]
        second = rotate_secret(session, "api:dan").secret
        assert signing_secrets(session, "api:dan", WebhookSettings()) == [second, first]
        deployment = new_secret()
        assert signing_secrets(session, "api:dan", WebhookSettings(secret=deployment)) == [
            deployment
        ]
        assert owner_secret(session, "api:erin").secret not in (first, second)
