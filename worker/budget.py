"""This worker's memory budget: what it announces in the fleet registry (``worker.app``) and
plans its jobs by (``worker.runner`` passes it to the engine; ``shared.memory`` decides
untiled, tiled or refused).

Measured once per process, at start: ``STYLEQUEUE_WORKER_MEMORY`` when set; else on a GPU
the GPU's free memory (``nvidia-smi``) plus what TensorFlow holds already (the warm model);
on a CPU the container's limit less what the rest of the container uses, or without a limit
the memory available plus what this process holds.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from dataclasses import dataclass

from stylequeue.shared.memory import format_bytes
from stylequeue.shared.settings import EngineSettings

log = logging.getLogger("stylequeue.worker")


@dataclass(frozen=True)
class Budget:
    bytes: int | None  # None: unknown (jobs are then not planned against a budget)
    source: str  # setting | gpu-free | cgroup | available | unknown

    def describe(self) -> str:
        if self.bytes is None:
            return "unknown"
        return f"{format_bytes(self.bytes)} ({self.source})"


_LOCK = threading.Lock()
_MEASURED: dict[int | None, Budget] = {}


def own_rss() -> int:
    """This process's resident set now, bytes (its high-water mark where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(knobs: EngineSettings, device: str | None) -> Budget:
    """The budget as things are now (see the module's docstring)."""
    from stylequeue.worker.engine import hardware

    if knobs.worker_memory is not None:
        return Budget(knobs.worker_memory, "setting")
    if device == "GPU":
        free = hardware.query_gpu_free_memory(os.environ.get("CUDA_VISIBLE_DEVICES"))
        if free is None:
            return Budget(None, "unknown")
        return Budget(free + _tensorflow_gpu_bytes(), "gpu-free")
    rss = own_rss()
    limits = hardware.cgroup_limit()
    budget = hardware.cpu_budget(rss, cgroup=limits)
    return Budget(budget, "unknown" if budget is None else "cgroup" if limits else "available")


def _tensorflow_gpu_bytes() -> int:
    try:
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["current"])
    except (ImportError, RuntimeError, ValueError, KeyError):
        return 0


def worker_budget(knobs: EngineSettings, device: str | None = None) -> Budget:
    """The process's budget, measured on the first call (at worker start, after warm-up)."""
    with _LOCK:
        budget = _MEASURED.get(knobs.worker_memory)
        if budget is None:
            if device is None:
                from stylequeue.worker.engine.hardware import device_kind

                device = device_kind().upper()
            budget = _MEASURED[knobs.worker_memory] = measure(knobs, device)
            log.info("memory budget: %s", budget.describe())
        return budget
