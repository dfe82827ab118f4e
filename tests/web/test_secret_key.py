"""Without STYLEQUEUE_SECRET_KEY every web process must still sign sessions alike: a
session made by one gunicorn worker is the same owner in the next (web/secret_key.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from stylequeue.shared.settings import Settings
from stylequeue.web import create_app
from stylequeue.web.secret_key import SecretKeyUnavailable, shared_secret_key
from tests.web.test_process import ROOT, service_env

# One web process: prints its session cookie and owner, or the owner a given cookie maps to.
PROCESS = textwrap.dedent(
    """
    import sys
    from stylequeue.web import create_app

    client = create_app().test_client()
    if len(sys.argv) > 1:
        client.set_cookie("stylequeue_session", sys.argv[1])
    body = client.get("/api/v1/session").get_json()
    cookie = client.get_cookie("stylequeue_session")
    print("OWNER=" + body["owner"])
    print("COOKIE=" + (cookie.value if cookie else ""))
    """
)


def run_process(settings: Settings, *args: str) -> dict[str, str]:
    env = service_env(settings)
    del env["STYLEQUEUE_SECRET_KEY"]
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_two_processes_without_a_key_share_sessions(settings: Settings) -> None:
    first = run_process(settings)
    assert first["OWNER"].startswith("web:") and first["COOKIE"]
    second = run_process(settings, first["COOKIE"])
    assert second["OWNER"] == first["OWNER"]


def test_two_apps_without_a_key_sign_alike(settings: Settings) -> None:
    keyless = replace(settings, secret_key="")
    one, two = create_app(keyless).test_client(), create_app(keyless).test_client()
    owner = one.get("/api/v1/session").get_json()["owner"]
    cookie = one.get_cookie("stylequeue_session")
    assert cookie is not None
    two.set_cookie("stylequeue_session", cookie.value)
    assert two.get("/api/v1/session").get_json()["owner"] == owner
    key_file = Path(settings.var_dir) / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_set_key_is_used_and_no_file_written(settings: Settings) -> None:
    app = create_app(settings)
    assert app.config["SECRET_KEY"] == settings.secret_key
    assert not (Path(settings.var_dir) / "secret_key").exists()


def test_a_var_dir_that_cannot_hold_the_key_refuses_to_start(
    settings: Settings, tmp_path: Path
) -> None:
    """Never a silent per-process key: no shared key, no start (the message names the
    setting to use)."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(SecretKeyUnavailable, match="STYLEQUEUE_SECRET_KEY"):
        create_app(replace(settings, secret_key="", var_dir=str(not_a_dir)))
    short = tmp_path / "short"
    short.mkdir()
    (short / "secret_key").write_text("too-short\n")
    with pytest.raises(SecretKeyUnavailable, match="no usable key"):
        shared_secret_key(short)
