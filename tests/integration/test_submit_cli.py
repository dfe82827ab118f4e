"""``stylequeue submit`` as a user runs it: a real subprocess against a live server + worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.settings import PREFIX
from tests.integration.conftest import (
    TOKENS,
    Stack,
    content_png,
    get_json,
    open_png,
    style_png,
    submit,
    token_session,
    wait_until_finished,
)
from tests.services import free_port, wait_for
from tests.worker_process import ROOT

SCRIPT = Path(sys.executable).with_name("stylequeue")  # the console script pip installed
EXPECTED_WH = (48, 36)  # the 80x60 content at --size 48
CLI_MAIN = (
    "from stylequeue.cli.main import main; main()"  # the same, where no console script exists
)
CLI_TIMEOUT = 180  # a hung command fails the test instead of hanging the suite


def stylequeue(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``stylequeue ARGS`` in a clean environment (no STYLEQUEUE_* of ours leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"  # rich wraps at the width: keep messages on one line
    argv = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", CLI_MAIN]
    return subprocess.run(
        [*argv, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    content = tmp_path / "photo.png"
    style = tmp_path / "painting.png"
    content.write_bytes(content_png())
    style.write_bytes(style_png())
    return content, style


def job_ids(stack: Stack, name: str) -> set[str]:
    jobs = get_json(token_session(name), stack.api("/jobs?per_page=100"))
    return {j["id"] for j in jobs["jobs"]}


def described(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def check_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert open_png(path.read_bytes()).size == EXPECTED_WH
    assert not list(path.parent.glob(f".{path.name}.part")), "partial download left behind"


def test_submit_waits_and_downloads_the_result(
    stack: Stack, images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    out = tmp_path / "out" / "OUT.png"
    before = job_ids(stack, "alice")
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url, "--token", TOKENS["alice"],
        "--size", "48", "--iterations", "10", "--weights", "random", "--snapshot-every", "5",
        "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, described(proc)
    check_png(out)
    assert f"saved {out}" in proc.stderr, described(proc)
    assert TOKENS["alice"] not in proc.stdout + proc.stderr  # the token is never echoed

    new = job_ids(stack, "alice") - before
    assert len(new) == 1, new
    job = get_json(token_session("alice"), stack.api(f"/jobs/{new.pop()}"))
    assert job["status"] == "succeeded" and job["iterations_done"] == 10, job
    assert job["params"]["max_size"] == 48 and job["params"]["weights"] == "random"
    assert job["id"] in proc.stderr  # it said which job it was following
    # what it saved is the server's best image, byte for byte
    result = token_session("alice").get(stack.url + job["links"]["result"], timeout=30)
    assert result.status_code == 200 and result.content == out.read_bytes()


def test_no_wait_prints_only_the_job_id(stack: Stack, images: tuple[Path, Path]) -> None:
    content, style = images
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url, "--token", TOKENS["alice"],
        "--size", "48", "--iterations", "10", "--weights", "random", "--no-wait",
    )  # fmt: skip
    assert proc.returncode == 0, described(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, described(proc)
    job_id = lines[0]
    assert str(uuid.UUID(job_id)) == job_id and uuid.UUID(job_id).version == 4
    session = token_session("alice")
    job = get_json(session, stack.api(f"/jobs/{job_id}"))
    assert job["id"] == job_id and job["iterations_total"] == 10
    # it was submitted, not just recorded: the worker runs it to the end
    assert wait_until_finished(stack, session, job_id)["status"] == "succeeded"
    # the job is Alice's only
    assert token_session("bob").get(stack.api(f"/jobs/{job_id}"), timeout=30).status_code == 404


def test_optimizer_and_scales_reach_the_job(stack: Stack, images: tuple[Path, Path]) -> None:
    content, style = images
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url, "--token", TOKENS["alice"],
        "--size", "48", "--iterations", "6", "--weights", "random", "--optimizer", "lbfgs",
        "--scales", "2", "--no-wait",
    )  # fmt: skip
    assert proc.returncode == 0, described(proc)
    session = token_session("alice")
    job = wait_until_finished(stack, session, proc.stdout.strip())
    assert job["status"] == "succeeded", job
    assert (job["params"]["optimizer"], job["params"]["scales"]) == ("lbfgs", 2)
    assert job["iterations_done"] == 6


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--iterations", "0", "iterations"),
        ("--size", "100000", "max_size"),
        ("--scales", "5", "scales"),
    ],
)
def test_bad_value_prints_the_servers_field_and_message(
    stack: Stack, images: tuple[Path, Path], tmp_path: Path, option: str, value: str, field: str
) -> None:
    # What the server says about this value, asked directly.
    direct = submit(stack, token_session("alice"), **{field: value})
    assert direct.status_code == 422, direct.text
    error = direct.json()["error"]
    assert error["field"] == field and error["message"], error

    content, style = images
    out = tmp_path / "never.png"
    before = job_ids(stack, "alice")
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url, "--token", TOKENS["alice"],
        option, value, "-o", str(out),
    )  # fmt: skip
    assert proc.returncode != 0, described(proc)
    printed = proc.stdout + proc.stderr
    # The server's field, with the option that sets it where the names differ.
    label = f"{field} ({option})" if option != f"--{field}" else field
    assert f"{label}: {error['message']}" in printed, described(proc)
    assert "422" in printed and error["code"] in printed, described(proc)
    assert "Traceback" not in printed, described(proc)
    assert not out.exists()
    assert job_ids(stack, "alice") == before  # nothing was created


def test_unreachable_server_is_a_clear_error(images: tuple[Path, Path], tmp_path: Path) -> None:
    port = free_port()  # bound and released: nothing listens there
    content, style = images
    server = f"http://127.0.0.1:{port}"
    proc = stylequeue(
        "submit", str(content), str(style), "--server", server, "--token", TOKENS["alice"],
        "-o", str(tmp_path / "never.png"),
    )  # fmt: skip
    assert proc.returncode != 0, described(proc)
    printed = proc.stdout + proc.stderr
    assert f"cannot reach the server at {server}" in printed, described(proc)
    assert "connection refused" in printed.lower(), described(proc)
    assert "Traceback" not in printed, described(proc)
    assert not (tmp_path / "never.png").exists()


def web_jobs(stack: Stack) -> dict[str, Job]:
    """Jobs owned by browser-style (cookie) sessions, read from the database: the API shows
    them only to the session that made them, and that session ended with the command."""
    with session_scope(stack.settings.database_url) as session:
        rows = session.scalars(select(Job).where(Job.owner.like("web:%"))).all()
        for row in rows:
            session.expunge(row)
        return {row.id: row for row in rows}


def test_without_token_the_cookie_session_is_used(
    stack: Stack, images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    out = tmp_path / "OUT.png"
    before = web_jobs(stack)
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url,
        "--size", "48", "--iterations", "10", "--weights", "random", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, described(proc)
    check_png(out)
    new = {k: v for k, v in web_jobs(stack).items() if k not in before}
    assert len(new) == 1, new
    job = next(iter(new.values()))
    assert job.status == "succeeded" and job.iterations_done == 10, job
    assert job.owner.startswith("web:")

    # --no-wait without a token: the id on stdout, the warning that it cannot be found later
    # on stderr
    proc = stylequeue(
        "submit", str(content), str(style), "--server", stack.url,
        "--size", "32", "--iterations", "5", "--weights", "random", "--no-wait",
    )  # fmt: skip
    assert proc.returncode == 0, described(proc)
    job_id = proc.stdout.strip()
    assert str(uuid.UUID(job_id)) == job_id, described(proc)
    assert "no --token" in proc.stderr, described(proc)
    rows = web_jobs(stack)
    assert job_id in rows and rows[job_id].owner != job.owner  # a new session, a new owner
    # let it finish so the module's worker is idle for the next test
    wait_for(
        lambda: web_jobs(stack)[job_id].status in ("succeeded", "failed", "canceled"),
        timeout=120,
        what=f"job {job_id} finished",
    )
    assert web_jobs(stack)[job_id].status == "succeeded"
