"""How the loop reads the losses on this backend: is a step call synchronous, and does reading
one step behind (``transfer(read_behind=True)``) change anything here?

    python bench/loss_read.py [--sizes 32,64] [--iterations 100] [--repeats 5]

For each size, the bare engine (no callbacks) runs with ``read_behind`` off and on,
alternating, ``--repeats`` times. Stopwatches around each compiled step call and around
each loss read (``step_tf.host_floats``) give: the step call's time, the read's time (were
the call asynchronous, the read would wait for the step: it would take about a step's time),
the host time per iteration outside the step (mean gap between one step's return and the
next call), and seconds per iteration. Medians over the runs. Random weights, the worker's
precision (``auto``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

REPO = _HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from stylequeue.shared.params import TransferParams  # noqa: E402


def one_run(size: int, iterations: int, behind: bool) -> dict[str, float]:
    from stylequeue.worker import engine
    from stylequeue.worker.engine import step_tf
    from stylequeue.worker.engine.hardware import resolve_precision
    from tests.factories import content_image, style_image

    starts: list[float] = []
    ends: list[float] = []
    reads: list[float] = []
    real_get_step, real_read = step_tf.get_step, step_tf.host_floats

    def timed_get_step(*a: Any, **kw: Any) -> Any:
        fn = real_get_step(*a, **kw)

        def timed(*args: Any) -> Any:
            starts.append(time.perf_counter())
            out = fn(*args)
            ends.append(time.perf_counter())
            return out

        return timed

    def timed_read(tensor: Any) -> list[float]:
        t = time.perf_counter()
        values = real_read(tensor)
        reads.append(time.perf_counter() - t)
        return values

    step_tf.get_step, step_tf.host_floats = timed_get_step, timed_read
    try:
        params = replace(
            TransferParams(), iterations=iterations, max_size=size, snapshot_every=0, seed=1,
            precision=resolve_precision("auto"),
        )  # fmt: skip
        result = engine.transfer(content_image(size, size), [style_image(size)], params,
                                 weights="random", read_behind=behind)  # fmt: skip
    finally:
        step_tf.get_step, step_tf.host_floats = real_get_step, real_read
    gaps = [b - a for a, b in zip(ends[1:-1], starts[2:], strict=True)]
    steps = [b - a for a, b in zip(starts, ends, strict=True)]
    history = result.history
    return {
        "per_it": (history[-1]["elapsed"] - history[0]["elapsed"]) / (len(history) - 1),
        "host_us": 1e6 * statistics.fmean(gaps),
        "step_ms": 1e3 * statistics.median(steps[1:]),
        "read_us": 1e6 * statistics.median(reads[1:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[32, 64])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from stylequeue.worker import engine
    from stylequeue.worker.engine import step_tf

    engine.warm_up("random")
    from stylequeue.worker.engine.hardware import resolve_precision

    print(f"# loss read, {platform.machine()}, {os.cpu_count()} cores, precision "
          f"{resolve_precision('auto')}; step_tf.runs_async() = {step_tf.runs_async()}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| size | read_behind | s/iteration | step call (ms) | loss read (µs) "
          "| host µs/iteration outside the step |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|")
    for size in args.sizes:
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for behind in (False, True):
                runs[behind].append(one_run(size, args.iterations, behind))
        for behind, rs in runs.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            mode = "on" if behind else "off"
            print(
                f"| {size} | {mode} | {med['per_it']:.4f} | {med['step_ms']:.1f} "
                f"| {med['read_us']:.0f} | {med['host_us']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
