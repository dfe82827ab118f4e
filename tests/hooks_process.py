"""A real webhooks worker subprocess for tests: ``celery -A stylequeue.hooks.app worker -Q
webhooks --pool threads``, with an environment built from a :class:`Settings`.

Where TensorFlow cannot be imported: a ``tensorflow`` package that raises on import comes
first on its ``PYTHONPATH`` (the web image has none at all), so a delivery that pulled the
engine in would fail; :meth:`HooksWorker.loaded_libraries` also lets a test look at what the
live process has mapped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path

from stylequeue.shared.settings import Settings
from tests.worker_process import ROOT, settings_env

START_TIMEOUT = 120.0
NO_TENSORFLOW = 'raise ImportError("the webhooks worker must not import TensorFlow")\n'


class HooksWorker:
    def __init__(self, settings: Settings, log_dir: Path, *, threads: int = 4) -> None:
        self.settings = settings
        self.name = f"hooks{uuid.uuid4().hex[:8]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        guard = log_dir / "no-tensorflow"
        for package in ("tensorflow", "keras"):
            (guard / package).mkdir(parents=True, exist_ok=True)
            (guard / package / "__init__.py").write_text(NO_TENSORFLOW)
        self.env = settings_env(settings)
        self.env["PYTHONPATH"] = str(guard) + os.pathsep + self.env["PYTHONPATH"]
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "stylequeue.hooks.app", "worker",
            "-Q", "webhooks", "--pool", "threads", "-c", str(self.threads),
            "-n", f"{self.name}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip

    def start(self) -> HooksWorker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hooks worker exited\n{self.log_tail()}")
            if "ready." in self.log_text():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"hooks worker not ready within {START_TIMEOUT}s\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def loaded_libraries(self) -> set[str]:
        """Paths of the files the live process has mapped (its shared libraries)."""
        import psutil

        return {m.path for m in psutil.Process(self.pid).memory_maps()}

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"---- {self.log_path} ----\n" + "\n".join(text)
