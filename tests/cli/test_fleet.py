"""``stylequeue fleet`` as an operator runs it: a real subprocess against the real app (served
by werkzeug in a thread), a real Redis registry and a real database."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from stylequeue.cli.fleet import human_bytes, human_seconds, watch
from stylequeue.cli.submit import ApiError, Unreachable
from stylequeue.shared import fleet
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.settings import PREFIX, Settings, parse_admin_tokens
from stylequeue.shared.states import utcnow
from tests.factories import insert_job
from tests.services import served

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fleet-admin-token"
CLI = "from stylequeue.cli.main import main; main(prog_name='stylequeue')"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WORKER = {
    "weights": "random", "weights_ok": True, "precision": "float32", "pid": 321,
    "host": "render-box", "device": "GPU", "device_name": "Tesla T4",
    "memory": {"kind": "gpu", "used_bytes": 3 * 2**30, "peak_bytes": 2**32},
}  # fmt: skip


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    admins = replace(settings, admin_tokens=parse_admin_tokens(f"ops={TOKEN}"))
    with served(admins, "fleet-cli-server") as url:
        yield url


@pytest.fixture
def registry(settings: Settings, redis_of: Callable[[Settings], redis.Redis]) -> redis.Redis:
    return redis_of(settings)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX) and k != "FORCE_COLOR"}
    env.update({"COLUMNS": "220", "PYTHONUNBUFFERED": "1", **extra})
    return env


def fleet_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, "fleet", *args], cwd=ROOT, env=_env(**env),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _busy_fleet(settings: Settings, client: redis.Redis) -> str:
    """One GPU worker running a job, two jobs waiting, a few finished in the last hour."""
    fleet.announce(client, "gpu0@render-box", WORKER)
    now = utcnow()
    job = insert_job(settings, owner="web:not-for-operators", status="running",
                     worker="gpu0@render-box/321", started_at=now, attempts=1)  # fmt: skip
    for i, it in enumerate(range(1, 21)):  # 19 iterations over 3.8 s of stream time: 5 it/s
        client.xadd(stream_key(job), {"iteration": it}, id=f"{2_000_000 + 200 * i}-0")
    insert_job(settings, status="queued", created_at=now - timedelta(minutes=3, seconds=5))
    insert_job(settings, status="queued", created_at=now)
    for status in ("succeeded", "succeeded", "succeeded", "failed"):
        insert_job(settings, status=status, finished_at=now - timedelta(minutes=20))
    return job


def test_fleet_prints_the_workers_queue_and_last_hour(
    server: str, settings: Settings, registry: redis.Redis
) -> None:
    job = _busy_fleet(settings, registry)
    done = fleet_cli("--server", server, "--token", TOKEN)
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    row = next(line for line in out.splitlines() if "gpu0@render-box" in line)
    for cell in ("render-box", "GPU: Tesla T4", "random", "float32", "3.0 GiB GPU", job,
                 "20/5", "5.00", "ago"):  # fmt: skip
        assert cell in row, (cell, row)
    assert re.search(r"queue: 2 waiting, oldest for \d+m\d\ds; running: 1", out), out
    assert "last hour: 3 succeeded, 1 failed, 0 canceled" in out, out
    assert "not-for-operators" not in out


def test_the_token_comes_from_the_environment(server: str, registry: redis.Redis) -> None:
    fleet.announce(registry, "cpu@laptop", {**WORKER, "device": "CPU", "device_name": None,
                                             "memory": None, "pid": 1})  # fmt: skip
    done = fleet_cli(STYLEQUEUE_SERVER=server, STYLEQUEUE_ADMIN_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert re.search(r"cpu@laptop .*CPU .*idle", done.stdout), done.stdout


def test_no_worker_and_refusals_are_one_clear_line(server: str) -> None:
    empty = fleet_cli("--server", server, "--token", TOKEN)
    assert empty.returncode == 0 and "no worker online" in empty.stdout
    missing = fleet_cli("--server", server)
    assert missing.returncode == 1 and "STYLEQUEUE_ADMIN_TOKEN" in missing.stderr
    wrong = fleet_cli("--server", server, "--token", "alice-token")  # an API token
    assert wrong.returncode == 1 and "HTTP 403" in wrong.stderr, wrong.stderr
    unknown = fleet_cli("--server", server, "--token", "nope")
    assert unknown.returncode == 1 and "HTTP 401" in unknown.stderr, unknown.stderr


@pytest.mark.parametrize("terminal", [True, False], ids=["live", "pipe"])
def test_watch_follows_the_fleet_until_ctrl_c(
    server: str, registry: redis.Redis, terminal: bool
) -> None:
    fleet.announce(registry, "first@box", WORKER)
    env = _env(FORCE_COLOR="1") if terminal else _env()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "fleet", "--watch", "--interval", "0.2", "--server", server,
         "--token", TOKEN],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = _reader(proc)
    try:
        _read_until(lines, "first@box")
        fleet.announce(registry, "second@box", WORKER)  # a worker comes up
        seen = _read_until(lines, "second@box")
        assert "first@box" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        while lines.get(timeout=30) is not None:  # the rest of its output, up to EOF
            pass
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0


def _reader(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(ANSI.sub("", line))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str | None], text: str, timeout: float = 60) -> str:
    """Output up to the first line with ``text`` (the table drawn so far, since the last
    time); fails after ``timeout`` seconds of not seeing it."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen[-40:])
    raise AssertionError(f"{text!r} not seen:\n" + "".join(seen[-40:]))


def test_watch_waits_out_a_restarting_server_and_stops_on_a_refusal() -> None:
    answers: list[object] = [Unreachable("down"), {"n": 1}, ApiError(503, "x", "y"), {"n": 2},
                             ApiError(401, "unauthorized", "unknown admin token")]  # fmt: skip
    shown: list[object] = []

    def fetch() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    with pytest.raises(ApiError) as info:
        watch(fetch, shown.append, interval=0, sleep=lambda _s: None)
    assert info.value.status == 401 and shown == [{"n": 1}, {"n": 2}]


def test_human_units() -> None:
    assert [human_bytes(n) for n in (512, 1536, 3 * 2**30, None)] == [
        "512 B", "1.5 KiB", "3.0 GiB", "-"
    ]  # fmt: skip
    assert [human_seconds(s) for s in (5, 185, 7620, None)] == ["5s", "3m05s", "2h07m", "-"]
