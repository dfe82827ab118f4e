"""``stylequeue submit --webhook``: the job the command makes carries the URL and events, and
a URL the server refuses ends the command with the server's error, making no job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from stylequeue.cli import submit as cli
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings, WebhookSettings
from stylequeue.web import create_app
from tests.web.live import serve


def _jobs(settings: Settings) -> list[tuple[str | None, list[str] | None]]:
    with session_scope(settings.database_url) as session:
        return [(j.webhook_url, j.webhook_events) for j in session.scalars(select(Job))]


def _submit(settings: Settings, pictures: tuple[Path, Path], *extra: str) -> tuple[int, str]:
    content, style = pictures
    with serve(create_app(settings)) as (base, _log):
        result = CliRunner().invoke(cli.submit, [
            str(content), str(style), "--server", base, "--token", "alice-token",
            "--iterations", "5", "--size", "64", "--no-wait", *extra,
        ])  # fmt: skip
    return result.exit_code, result.output


def test_the_job_carries_the_webhook_and_its_events(
    settings: Settings, pictures: tuple[Path, Path]
) -> None:
    local = replace(settings, webhooks=WebhookSettings(allow_private=True, allow_http=True))
    code, output = _submit(local, pictures, "--webhook", "http://127.0.0.1:9/hook",
                           "--webhook-events", "started,completed")  # fmt: skip
    assert code == 0, output
    assert _jobs(local) == [("http://127.0.0.1:9/hook", ["started", "completed"])]


def test_a_refused_webhook_is_the_servers_error_and_makes_no_job(
    settings: Settings, pictures: tuple[Path, Path]
) -> None:
    """This server allows neither loopback nor plain-http receivers (the defaults)."""
    code, output = _submit(settings, pictures, "--webhook", "http://127.0.0.1:9/hook")
    assert code != 0
    assert "webhook_refused, HTTP 422" in output  # the server's answer, named field first
    assert "webhook: " in output
    assert _jobs(settings) == []
