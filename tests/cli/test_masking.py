"""`stylequeue dev` and `stylequeue migrate` print URLs through the one password mask
(stylequeue.shared.text.hide_password, tested on its own in tests/shared/test_text.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stylequeue.cli import admin, dev
from stylequeue.shared import settings as settings_module
from stylequeue.shared.settings import load_settings

# IPv6 host and a mixed-case name: a mask that rebuilds the host from its parsed parts loses
# the brackets or the case; one with '@' and ':' in the password trips a URL parser.
REDIS = "redis://:pw@[::1]:6379/0"
DATABASE = "postgresql+psycopg://sq:p@ss:w0rd@Db-Host:5432/stylequeue"


def test_dev_summary_masks_passwords() -> None:
    lines: list[str] = []
    supervisor = dev.Supervisor(echo=lines.append)
    settings = load_settings({"STYLEQUEUE_DATABASE_URL": DATABASE, "STYLEQUEUE_REDIS_URL": REDIS})
    dev._summary(settings, REDIS, supervisor)
    text = "\n".join(lines)
    assert "redis://:***@[::1]:6379/0" in text
    assert "postgresql+psycopg://sq:***@Db-Host:5432/stylequeue" in text
    assert "pw" not in text and "w0rd" not in text


def test_migrate_masks_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr("stylequeue.shared.migrate.upgrade", lambda u, r: calls.append((u, r)))
    monkeypatch.setenv("STYLEQUEUE_DATABASE_URL", DATABASE)
    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(admin.migrate, [])
    finally:
        settings_module.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert calls == [(DATABASE, "head")]  # the real URL goes to Alembic...
    assert result.output.strip() == (  # ...and only the masked one is printed
        "database at head: postgresql+psycopg://sq:***@Db-Host:5432/stylequeue"
    )
