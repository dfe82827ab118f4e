"""The test harness's own decisions: which PostgreSQL the `postgres` cases use, and what a
run says when there is none (tests/services.py, tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import services
from tests.conftest import POSTGRES

ROOT = Path(__file__).resolve().parent.parent


def _closed_port_url() -> str:
    """A PostgreSQL URL on a real local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def test_no_postgres_answering_leaves_the_cases_out_with_one_line() -> None:
    url = _closed_port_url()
    choice = services.choose_postgres({services.POSTGRES_ENV: url})
    assert choice.url is None
    assert choice.note is not None and "\n" not in choice.note
    assert url.rsplit("@", 1)[1] in choice.note and services.POSTGRES_ENV in choice.note


def test_no_postgres_under_ci_is_an_error() -> None:
    url = _closed_port_url()
    with pytest.raises(services.PostgresUnavailable, match="CI=true"):
        services.choose_postgres({services.POSTGRES_ENV: url, "CI": "true"})
    with pytest.raises(services.PostgresUnavailable, match="CI=true"):
        services.choose_postgres({services.POSTGRES_ENV: "off", "CI": "true"})


def test_postgres_can_be_turned_off_outside_ci() -> None:
    choice = services.choose_postgres({services.POSTGRES_ENV: "off"})
    assert choice.url is None and choice.note and "SQLite only" in choice.note


def test_the_default_server_is_the_local_one() -> None:
    assert services.DEFAULT_POSTGRES_URL == "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    # No URL set: the default is probed (whatever the answer, it decides, and never raises
    # outside CI).
    choice = services.choose_postgres({})
    assert choice.url in (services.DEFAULT_POSTGRES_URL, None)
    assert (choice.url is None) == (choice.note is not None)


@pytest.mark.skipif(POSTGRES.url is None, reason="no PostgreSQL in this session")
def test_an_answering_server_is_chosen() -> None:
    assert POSTGRES.url is not None
    assert services.choose_postgres({services.POSTGRES_ENV: POSTGRES.url}).url == POSTGRES.url
    assert services.postgres_backends() == ["sqlite", "postgres"]


def _collect(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A real pytest run (collection only) of a module with `postgres` cases."""
    full = {k: v for k, v in os.environ.items() if k not in ("CI", services.POSTGRES_ENV)}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/shared/test_migrations.py"],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_run_without_postgres_says_so_once_at_the_end() -> None:
    done = _collect({services.POSTGRES_ENV: _closed_port_url()})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[sqlite]" in done.stdout and "[postgres]" not in done.stdout
    said = [line for line in done.stdout.splitlines() if "PostgreSQL cases not run" in line]
    assert len(said) == 1, done.stdout
    tail = done.stdout.strip().splitlines()[-3:]
    assert said[0] in tail, done.stdout


def test_a_ci_run_without_postgres_fails() -> None:
    done = _collect({services.POSTGRES_ENV: _closed_port_url(), "CI": "true"})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "CI=true: the PostgreSQL cases must run" in done.stdout + done.stderr
