"""The engine's loss minimised by SciPy's L-BFGS-B: a reference for the engine's own L-BFGS.

    pip install scipy        # not a dependency of stylequeue; only this script needs it
    python bench/lbfgs_reference.py --size 128 --iterations 150 \
        [--content IMG --style IMG] [--history 10]

Same loss, targets, start and bounds ([0, 1] pixels) as a job (``core._prepare`` and the
L-BFGS step's own loss-and-gradient function), random weights (seeded); SciPy runs the
textbook L-BFGS-B (generalised Cauchy point, Moré-Thuente line search, scalar initial
Hessian). Prints the best loss after iterations 10, 25, 50, ... and the evaluations used;
compare with ``bench/engine.py --race adam:300,lbfgs:150`` at the same size and images.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

MARKS = (10, 25, 50, 75, 100, 150, 200, 300)


def _engine_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_engine", _HERE / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--history", type=int, default=10, help="L-BFGS-B's maxcor")
    parser.add_argument("--content", help="content image (default: synthetic)")
    parser.add_argument("--style", help="style image (default: synthetic)")
    args = parser.parse_args(argv)
    try:
        from scipy.optimize import minimize
    except ImportError:
        print("this reference needs SciPy: pip install scipy", file=sys.stderr)
        return 2
    from keras import ops

    from stylequeue.worker.engine import core, step_lbfgs_tf

    bench = _engine_bench()
    content, style = bench.load_inputs(args)
    params = replace(bench.bench_params(args, "float32"), snapshot_every=0)
    job = core._prepare(content, [style], params, "random")
    evaluate, _ = step_lbfgs_tf.get_functions(job.extractor, job.content_layers, job.style_layers)
    targets = core._targets(job)
    x0 = core._initial_image(job).astype(np.float32)
    shape = (1, *x0.shape)
    losses: list[float] = []
    best_after: list[float] = []  # per iteration: the best loss evaluated so far

    def loss_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = ops.convert_to_tensor(z.reshape(shape).astype(np.float32))
        values, grad = evaluate(x, *targets)
        losses.append(float(values.numpy()[0]))
        return losses[-1], grad.numpy().astype(np.float64).ravel()

    started = time.perf_counter()
    minimize(
        loss_and_grad, x0.ravel().astype(np.float64), jac=True, method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * x0.size, callback=lambda _: best_after.append(min(losses)),
        options={"maxiter": args.iterations, "maxcor": args.history,
                 "maxfun": 10 * args.iterations, "ftol": 0.0, "gtol": 0.0},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"# SciPy L-BFGS-B on the engine's loss: {args.size} px, history {args.history}, "
          f"{len(best_after)} iterations, {len(losses)} evaluations, {seconds:.0f} s")  # fmt: skip
    print("| iteration | " + " | ".join(str(k) for k in MARKS if k <= len(best_after)) + " |")
    print("|---|" + "---:|" * sum(k <= len(best_after) for k in MARKS))
    print(
        "| best loss | "
        + " | ".join(f"{best_after[k - 1]:.4e}" for k in MARKS if k <= len(best_after))
        + " |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
