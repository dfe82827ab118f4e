"""Precision ``auto``: bf16 only where the hardware has it natively."""

from __future__ import annotations

from stylequeue.worker.engine.hardware import cpu_has_bf16, resolve_precision

CPU_WITH = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n"
CPU_WITHOUT = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"


def test_cpu_flags_decide_bf16() -> None:
    assert cpu_has_bf16(CPU_WITH)
    assert not cpu_has_bf16(CPU_WITHOUT)
    assert not cpu_has_bf16("")


def test_explicit_precision_is_kept() -> None:
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_auto_follows_this_machine() -> None:
    # No GPU here, so the CPU's flags decide.
    expected = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert resolve_precision("auto") == expected
