"""Precision ``auto``: bf16 only where the hardware has it natively.

Expected values are written out by hand for representative machines (never computed with
the code under test).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stylequeue.worker.engine.hardware import (
    capabilities_have_bf16,
    choose_precision,
    cpu_has_bf16,
    resolve_precision,
)

CPU_WITH = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n"
CPU_AMX_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n"
CPU_WITHOUT = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
# A flag of that name on another line (e.g. "vmx flags" or "bugs") is not a CPU feature.
CPU_ELSEWHERE = "processor\t: 0\nflags\t\t: fpu sse2\nbugs\t\t: avx512_bf16\n"


def test_cpu_flags_decide_bf16() -> None:
    assert cpu_has_bf16(CPU_WITH) is True
    assert cpu_has_bf16(CPU_AMX_ONLY) is True
    assert cpu_has_bf16(CPU_WITHOUT) is False
    assert cpu_has_bf16(CPU_ELSEWHERE) is False
    assert cpu_has_bf16("") is False


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([], None),  # no GPU: the CPU decides
        ([(8, 0)], True),  # A100
        ([(9, 0)], True),  # H100 / H200
        ([(8, 6), (8, 9)], True),  # two Ampere/Ada cards
        ([(7, 5)], False),  # T4: bf16 only emulated
        ([(7, 0)], False),  # V100
        ([(8, 0), (7, 5)], False),  # one old card is enough to stay on float32
        ([None], False),  # capability unknown: do not guess
    ],
)
def test_gpu_capabilities_decide_bf16(capabilities: list, expected: bool | None) -> None:
    assert capabilities_have_bf16(capabilities) is expected


@pytest.mark.parametrize(
    ("setting", "gpu_bf16", "cpu_bf16", "expected"),
    [
        ("auto", None, True, "mixed_bfloat16"),  # no GPU, AVX512-BF16/AMX CPU
        ("auto", None, False, "float32"),  # no GPU, plain CPU
        ("auto", True, False, "mixed_bfloat16"),  # Ampere+ GPU on a plain CPU
        ("auto", False, True, "float32"),  # an old GPU decides, whatever the CPU has
        ("auto", False, False, "float32"),
        ("float32", True, True, "float32"),  # explicit settings are kept
        ("mixed_bfloat16", False, False, "mixed_bfloat16"),
    ],
)
def test_choose_precision(
    setting: str, gpu_bf16: bool | None, cpu_bf16: bool, expected: str
) -> None:
    assert choose_precision(setting, gpu_bf16, cpu_bf16) == expected


def test_explicit_precision_is_kept() -> None:
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_auto_follows_this_machine() -> None:
    """This machine's answer, from its own description read here independently: the GPUs'
    compute capabilities if TensorFlow sees any, else the CPU's flags line."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        majors = [
            (tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0))[0]
            for g in gpus
        ]
        native = min(majors) >= 8
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        native = bool(re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", cpuinfo, re.M))
    assert resolve_precision("auto") == ("mixed_bfloat16" if native else "float32")


# ---- memory: what the machine can give a job ------------------------------------------------

MEMINFO = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"


def test_cpu_budget_is_what_is_available_plus_what_the_process_holds() -> None:
    from stylequeue.worker.engine.hardware import cpu_budget

    assert cpu_budget(10**9, MEMINFO, cgroup=None) == 20_000_000 * 1024 + 10**9
    # in a container: its limit, less what the others in it use
    limited = cpu_budget(10**9, MEMINFO, cgroup=(6 * 10**9, 3 * 10**9))
    assert limited == 6 * 10**9 - (3 * 10**9 - 10**9)
    assert cpu_budget(0, "", cgroup=None) is None


def test_cgroup_limits_v2_and_v1(tmp_path: Path) -> None:
    from stylequeue.worker.engine.hardware import cgroup_limit

    (tmp_path / "memory.max").write_text("6442450944\n")
    (tmp_path / "memory.current").write_text("1073741824\n")
    assert cgroup_limit(tmp_path) == (6442450944, 1073741824)
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    assert cgroup_limit(v1) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text("4000000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5000\n")
    assert cgroup_limit(v1) == (4_000_000_000, 5000)
    assert cgroup_limit(tmp_path / "none") is None


def test_gpu_free_memory_of_the_gpu_tensorflow_computes_on() -> None:
    from stylequeue.worker.engine.hardware import gpu_free_memory

    smi = "0, 1000\n1, 80000\n"
    assert gpu_free_memory(smi) == 1000 * 2**20  # GPU:0 is the first one
    assert gpu_free_memory(smi, "1,0") == 80000 * 2**20  # CUDA_VISIBLE_DEVICES=1,0
    assert gpu_free_memory(smi, "7") is None
    assert gpu_free_memory("") is None
