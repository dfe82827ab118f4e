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
