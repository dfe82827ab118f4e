"""Which precision this machine runs fastest: bf16 where the hardware has it natively.

``STYLEQUEUE_PRECISION=auto`` (the default) resolves here, once per worker process. bf16
is markedly faster per step on a CPU with AVX512-BF16/AMX and on Ampere-or-newer GPUs,
with a final loss close to float32's (figures in bench/RESULTS.md); elsewhere it would be
emulated and slower, so float32 stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def gpus_have_bf16() -> bool | None:
    """True/False for the visible GPUs (compute capability >= 8.0); None when there are none."""
    import tensorflow as tf

    return capabilities_have_bf16([
        tf.config.experimental.get_device_details(gpu).get("compute_capability")
        for gpu in tf.config.list_physical_devices("GPU")
    ])  # fmt: skip


def capabilities_have_bf16(capabilities: Sequence[tuple[int, int] | None]) -> bool | None:
    """Native bf16 on every GPU of these compute capabilities (None: an unknown one)?
    None when there are no GPUs."""
    if not capabilities:
        return None
    return all(cap and tuple(cap) >= (8, 0) for cap in capabilities)


def choose_precision(setting: str, gpu_bf16: bool | None, cpu_bf16: bool) -> str:
    """``auto`` -> bf16 if the GPUs (when there are any, else the CPU) have it natively."""
    if setting != "auto":
        return setting
    native = gpu_bf16 if gpu_bf16 is not None else cpu_bf16
    return "mixed_bfloat16" if native else "float32"


@lru_cache(maxsize=4)
def resolve_precision(setting: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` or ``float32`` for this machine; others unchanged."""
    if setting != "auto":
        return setting
    return choose_precision(setting, gpus_have_bf16(), cpu_has_bf16())


@lru_cache(maxsize=1)
def device_kind() -> str:
    """``gpu`` where TensorFlow sees a GPU (the engine computes there), else ``cpu``: which
    of the memory model's constants apply."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


# ---- memory: what this machine can give a job (shared.memory's budget) ---------------------


def _meminfo_bytes(meminfo: str, key: str) -> int | None:
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024  # kB
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> tuple[int, int] | None:
    """(limit, usage) in bytes of this process's memory cgroup (a container's limit), v2 or
    v1; None when there is no limit."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # v1
    ):
        raw = _read(root / limit_file)
        if raw is None:
            continue
        raw = raw.strip()
        if not raw.isdigit() or int(raw) >= 2**60:  # "max", or v1's "no limit" sentinel
            return None
        usage = _read(root / usage_file)
        return int(raw), int(usage.strip()) if usage and usage.strip().isdigit() else 0
    return None


def cpu_budget(
    own_rss: int, meminfo: str | None = None, cgroup: tuple[int, int] | bool | None = True
) -> int | None:
    """What this process may grow to: the memory available now plus what it holds already,
    and within a container's limit, what the others in it leave. ``cgroup``: True reads it,
    else (limit, usage) or None. None when /proc/meminfo cannot be read."""
    if meminfo is None:
        meminfo = _read(Path("/proc/meminfo")) or ""
    available = _meminfo_bytes(meminfo, "MemAvailable")
    budget = None if available is None else available + own_rss
    limits = cgroup_limit() if cgroup is True else cgroup or None
    if limits:
        limit, usage = limits
        in_container = limit - max(0, usage - own_rss)
        budget = in_container if budget is None else min(budget, in_container)
    return budget


def gpu_free_memory(smi_output: str, visible: str | None = None) -> int | None:
    """Free bytes of the GPU the engine computes on (TensorFlow's GPU:0): the first of
    ``visible`` (CUDA_VISIBLE_DEVICES, passed in by the caller) among the lines of
    ``nvidia-smi --query-gpu=index,memory.free --format=csv,noheader,nounits`` (MiB)."""
    free: dict[str, int] = {}
    for line in smi_output.splitlines():
        index, _, mib = line.partition(",")
        if index.strip().isdigit() and mib.strip().isdigit():
            free[index.strip()] = int(mib.strip()) * 2**20
    if not free:
        return None
    first = (visible or "").split(",")[0].strip()
    if first in free:
        return free[first]
    return next(iter(free.values())) if not first or not first.isdigit() else None


def query_gpu_free_memory(visible: str | None = None) -> int | None:
    """:func:`gpu_free_memory` from ``nvidia-smi``; None when it cannot be run."""
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return gpu_free_memory(done.stdout, visible)
