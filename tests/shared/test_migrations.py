"""Alembic history and the models agree, on every backend; the migrate command works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from stylequeue.cli.admin import migrate
from stylequeue.shared.db import get_engine
from stylequeue.shared.migrate import alembic_config, upgrade
from stylequeue.shared.models import Base
from stylequeue.shared.settings import get_settings
from tests import services
from tests.conftest import POSTGRES_ENV

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get(POSTGRES_ENV) else [])


def _script(url: str = "sqlite://") -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(url))


def _diff(url: str) -> list:
    with get_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_history_has_exactly_one_head() -> None:
    heads = _script().get_heads()
    assert len(heads) == 1, f"several Alembic heads, merge them: {heads}"


def test_history_starts_from_one_base() -> None:
    script = _script()
    assert len(script.get_bases()) == 1, script.get_bases()
    assert list(script.walk_revisions()), "no migrations at all"


def test_database_url_is_at_head_and_matches_the_models(database_url: str) -> None:
    assert _current(database_url) == _script(database_url).get_current_head()
    diff = _diff(database_url)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_upgrade_head_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'new.db'}"  # the folder does not exist yet
    upgrade(url)
    assert "jobs" in _tables(url)
    assert _current(url) == _script(url).get_current_head()
    assert _diff(url) == []
    upgrade(url)  # a second run is a no-op, not an error
    assert _current(url) == _script(url).get_current_head()


@pytest.mark.parametrize("backend", BACKENDS)
def test_downgrade_to_base_and_upgrade_again(backend: str, tmp_path: Path) -> None:
    with services.migrated_database(backend, tmp_path) as url:
        head = _script(url).get_current_head()
        assert _current(url) == head
        command.downgrade(alembic_config(url), "base")
        assert _current(url) is None
        assert "jobs" not in _tables(url)
        command.upgrade(alembic_config(url), "head")
        assert _current(url) == head
        assert "jobs" in _tables(url)
        assert _diff(url) == []


@pytest.fixture
def fresh_settings_cache():  # type: ignore[no-untyped-def]
    """The CLI reads get_settings() (cached): start and end with a clean cache."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_stylequeue_migrate_command_creates_the_jobs_table(
    tmp_path: Path, fresh_settings_cache: None
) -> None:
    db = tmp_path / "cli" / "stylequeue.db"
    url = f"sqlite:///{db}"
    result = CliRunner().invoke(migrate, [], env={"STYLEQUEUE_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert db.is_file()
    assert "jobs" in _tables(url)
    assert _current(url) == _script(url).get_current_head()
    assert "database at head" in result.output
