"""A real ``celery worker`` subprocess for tests and benchmarks.

``celery -A stylequeue.worker.app worker -Q style -c 1 --pool prefork -n <unique>@%h`` with an
environment built from a :class:`Settings`, its log captured to a file. Ready means: the
parent logged ``ready.`` and the pool child warmed the extractor and announced itself in the
fleet registry (so a job sent now starts at once, as on a warm production worker).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any

import redis

from stylequeue.shared import fleet, keys
from stylequeue.shared.models import Job
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.settings import PREFIX, Settings
from stylequeue.shared.storage import get_storage
from tests.factories import get_job

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0  # TensorFlow import + VGG19 build on a busy 2-core machine
WAIT = 180.0  # for a job to reach a state: generous, never a timing assertion


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The STYLEQUEUE_* environment that makes ``get_settings()`` return ``settings``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for key in [k for k in env if k.startswith(PREFIX)]:
        del env[key]
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "api_tokens" or value is None:
            continue
        if f.name == "limits":
            for lf in fields(value):
                env[PREFIX + lf.name.upper()] = str(getattr(value, lf.name))
            continue
        if f.name == "webhooks":
            for wf in fields(value):
                if getattr(value, wf.name) is not None:
                    env[PREFIX + "WEBHOOK_" + wf.name.upper()] = str(getattr(value, wf.name))
            continue
        env[PREFIX + f.name.upper()] = str(value)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class WorkerProcess:
    """One worker node (parent + one prefork child)."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
        beat: bool = False,
    ) -> None:
        self.settings = settings
        self.name = name or f"t{uuid.uuid4().hex[:8]}"
        self.nodename = f"{self.name}@{socket.gethostname()}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.env = settings_env(settings)
        self.env.update(extra_env or {})
        self.beat = beat
        self.proc: subprocess.Popen[bytes] | None = None

    # ---- life cycle ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "celery", "-A", "stylequeue.worker.app", "worker",
            "-Q", "style", "-c", "1", "--pool", "prefork", "-n", f"{self.name}@%h",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        if self.beat:
            argv += ["-B", "--schedule", str(self.log_path.with_suffix(".beat"))]
        return argv

    def start(self, timeout: float = START_TIMEOUT) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT, not_pid: int | None = None) -> int:
        """Wait for ``ready.`` and a warm child (other than ``not_pid``); return its pid."""
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with {self.proc.returncode}\n{self.log_tail()}"
                    )
                info = self._fleet_info(client)
                if info and info.get("pid") != not_pid and "ready." in self.log_text():
                    return int(info["pid"])
                time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(f"worker not ready within {timeout}s\n{self.log_tail()}")

    def _fleet_info(self, client: redis.Redis) -> dict[str, Any] | None:
        try:
            workers = fleet.list_workers(client)
        except redis.RedisError:
            return None
        for info in workers:
            if info.get("name") == self.nodename and self._is_child(info.get("pid")):
                return info
        return None

    def _is_child(self, pid: Any) -> bool:
        return isinstance(pid, int) and pid in self.child_pids()

    def child_pids(self) -> list[int]:
        """Pool children of the worker's main process."""
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def fleet_info(self) -> dict[str, Any] | None:
        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1)
        try:
            return self._fleet_info(client)
        finally:
            client.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the MAIN process only (the child dies with it: Celery sets PDEATHSIG)."""
        if self.alive():
            os.kill(self.pid, sig)

    def kill_child(self, sig: int = signal.SIGKILL) -> int:
        children = self.child_pids()
        assert children, "worker has no pool child"
        os.kill(children[0], sig)
        return children[0]

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole process group if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray children, if any
        self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            print(self.log_tail(), file=sys.stderr)
        self.stop()

    # ---- log -----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"---- {self.log_path} (last {len(text)} lines) ----\n" + "\n".join(text)


@contextmanager
def running_worker(settings: Settings, log_dir: Path, **kwargs: Any) -> Iterator[WorkerProcess]:
    """Start a worker, yield it, stop it; print its log if the body raised."""
    worker = WorkerProcess(settings, log_dir, **kwargs)
    try:
        worker.start()
        yield worker
    except BaseException:
        print(worker.log_tail(), file=sys.stderr)
        raise
    finally:
        worker.stop()


# ---- polling helpers (generous timeouts; tests never assert on durations) ----------------


def wait_for_job(
    settings: Settings,
    job_id: str,
    until: Callable[[Job], bool],
    timeout: float = WAIT,
    what: str = "condition",
    worker: WorkerProcess | None = None,
) -> Job:
    deadline = time.monotonic() + timeout
    job = get_job(settings, job_id)
    while time.monotonic() < deadline:
        job = get_job(settings, job_id)
        if until(job):
            return job
        time.sleep(0.05)
    tail = f"\n{worker.log_tail()}" if worker else ""
    raise AssertionError(f"job {job_id}: {what} not reached within {timeout}s: {job!r}{tail}")


def wait_for_status(
    settings: Settings, job_id: str, *statuses: str, timeout: float = WAIT, **kw: Any
) -> Job:
    return wait_for_job(
        settings, job_id, lambda j: j.status in statuses, timeout, f"status in {statuses}", **kw
    )


def wait_for_iteration(
    settings: Settings, job_id: str, iteration: int, timeout: float = WAIT
) -> list[dict[str, Any]]:
    """Poll the progress stream until it shows ``iteration``; return its entries."""
    client = redis.Redis.from_url(settings.redis_url)
    stream = ProgressStream(client)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            entries, _ = stream.read(job_id, count=100_000)
            if entries and entries[-1]["iteration"] >= iteration:
                return entries
            time.sleep(0.02)
    finally:
        client.close()
    raise AssertionError(f"job {job_id}: iteration {iteration} not streamed within {timeout}s")


def read_stream(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        entries, _ = ProgressStream(client).read(job_id, count=100_000)
        return entries
    finally:
        client.close()


def check_finished_job(settings: Settings, job_id: str, n: int, snapshot_every: int) -> None:
    """Stream 1..n in order with increasing ids, snapshots + result + history in storage."""
    job = get_job(settings, job_id)
    entries = read_stream(settings, job_id)
    assert [e["iteration"] for e in entries] == list(range(1, n + 1))
    ids = [tuple(int(x) for x in e["id"].split("-")) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert set(entries[0]) == {"id", "iteration", "loss", "content", "style", "tv", "elapsed"}

    storage = get_storage(settings)
    expected = sorted({*range(snapshot_every, n + 1, snapshot_every), n})
    assert job.snapshot_iterations == expected
    for it in expected:
        assert storage.get(keys.job_snapshot_key(job, it)).startswith(b"\x89PNG")
    assert job.result_key == keys.result_key(job_id, attempt=job.attempts)
    assert storage.get(job.result_key).startswith(b"\x89PNG")
    history = json.loads(storage.get(job.history_key))
    assert history["job_id"] == job_id and history["weights"] == job.weights
    assert history["entries"] == entries  # same ids and values as the stream
    assert history["params"]["iterations"] == n
