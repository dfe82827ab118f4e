"""What a worker tells the fleet registry about its machine: the device and its memory."""

from __future__ import annotations

from stylequeue.worker.app import cpu_model, memory_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme
"""


def test_cpu_model_from_cpuinfo() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_model("processor\t: 0\n") is None  # some ARM kernels name no model


def test_memory_of_a_cpu_worker_is_its_resident_set() -> None:
    memory = memory_info("CPU")
    assert memory is not None and memory["kind"] == "rss"
    assert 0 < memory["used_bytes"] <= memory["peak_bytes"]
