"""Prints: time and memory by size, untiled and tiled, and what tiling costs in quality.

    python bench/engine.py --prints                         # the whole table (long)
    python bench/engine.py --prints --sizes 512 --tiled-sizes "" --seams 0   # one size
    python bench/engine.py --prints --sizes "" --tiled-sizes 4096 --budget 6GB --seams 0
    python bench/engine.py --prints --sizes "" --tiled-sizes "" --seams 1024 --tile 512

Every run is its own process (this script re-invoked with ``--run``), so its peak RSS
(``ru_maxrss``) is its own; the table sets it beside the memory model's prediction
(``shared.memory``). Square synthetic images (content and style of the same size), random
weights (seeded), ``--iterations`` iterations; s/iteration is the median after the first
(which pays for tracing).

Seams (``--seams SIZE``): the same job untiled and tiled (``--tile`` px cores) from the same
start, for each way of taking the Grams (``--grams``): the final losses side by side, and
the seam metric: the mean absolute Laplacian of the result on the tile borders (the two
pixel rows/columns each side of every border between cores) against the rest of the image;
a ratio near 1 means no seam. The untiled result is measured on the same lines, for
reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = _HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from stylequeue.shared import memory  # noqa: E402
from stylequeue.shared.params import TransferParams  # noqa: E402

PRECISIONS = {"bf16": "mixed_bfloat16", "float32": "float32"}


def synthetic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A square photo-like content and a square 'painting' style, ``size`` px each."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.stack([x / size, y / size, 0.5 + 0.3 * np.sin((x + y) / (size / 16))], axis=-1)
    for _ in range(6):
        cy, cx, r = [*rng.uniform(0, size, 2).tolist(), rng.uniform(size / 20, size / 6)]
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + rng.uniform(0, 1, 3).astype(np.float32) * blob
    content = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    del img, blob
    bands = np.sin(x / 5 + 3 * np.sin(y / 17)) + 0.3 * rng.standard_normal((size, size))
    style = np.where((bands > 0)[..., None], [230, 190, 50], [25, 50, 140]).astype(np.uint8)
    return content, style


def params_for(size: int, iterations: int, precision: str) -> TransferParams:
    return replace(
        TransferParams(),
        iterations=iterations,
        max_size=size,
        snapshot_every=0,
        precision=precision,
    )


def _layers() -> list[str]:
    defaults = TransferParams()
    return [n for n, _ in defaults.content_layers + defaults.style_layers]


# ---- one run (child process) ------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict:
    content, style = synthetic(args.size)
    precision = PRECISIONS[args.precision]
    params = params_for(args.size, args.iterations, precision)
    budget = memory.parse_bytes(args.limit) if args.limit else None
    from stylequeue.worker.engine import transfer
    from stylequeue.worker.engine.memory import plan_job

    layout = plan_job(content, params, budget, args.core or None)
    stamps: list[float] = []
    losses: list[float] = []

    def on_iteration(report) -> None:  # type: ignore[no-untyped-def]
        stamps.append(report.elapsed)
        losses.append(report.loss)

    started = time.perf_counter()
    if layout.tiled:
        from stylequeue.worker.engine.tiling import transfer_tiled

        result = transfer_tiled(
            content, [style], params, weights="random", tile=layout.core, grams=args.grams,
            on_iteration=on_iteration,
        )  # fmt: skip
    else:
        result = transfer(content, [style], params, weights="random", on_iteration=on_iteration)
    seconds = time.perf_counter() - started
    if args.save:
        np.save(Path(args.workdir) / f"{args.save}.npy", result.image)
    per_iteration = np.diff([0.0, *stamps]).tolist()
    return {
        "size": args.size,
        "precision": args.precision,
        "tiled": layout.tiled,
        "core": layout.core,
        "tiles": memory.make_tiles(result.image.shape[:2], layout.core, _layers()).count
        if layout.core
        else 1,
        "grams": args.grams if layout.tiled else None,
        "per_iteration": per_iteration,
        "losses": losses,
        "seconds": seconds,
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "predicted_bytes": layout.estimate,
        "untiled_predicted_bytes": layout.untiled_estimate,
    }


# ---- the seam metric ------------------------------------------------------------------------


def laplacian(img: np.ndarray) -> np.ndarray:
    """|4-neighbour Laplacian| per pixel (mean over channels), inner pixels only."""
    x = img.astype(np.float32) / 255.0
    lap = (
        x[1:-1, :-2] + x[1:-1, 2:] + x[:-2, 1:-1] + x[2:, 1:-1] - 4 * x[1:-1, 1:-1]
    )  # fmt: skip
    return np.abs(lap).mean(axis=-1)


def seam_ratio(img: np.ndarray, borders: list[int], width: int = 2) -> tuple[float, float, float]:
    """(mean |Laplacian| on the tile borders, elsewhere, their ratio). ``borders``: the
    pixel offsets where one core ends and the next begins (the same for rows and columns,
    square images); the border band is ``width`` pixels each side."""
    lap = laplacian(img)  # index i is pixel i + 1
    n = lap.shape[0]
    mask = np.zeros(n, dtype=bool)
    for b in borders:
        mask[max(0, b - width - 1) : min(n, b + width - 1)] = True
    on = mask[:, None] | mask[None, :]
    border, inner = float(lap[on].mean()), float(lap[~on].mean())
    return border, inner, border / inner


# ---- the driver -------------------------------------------------------------------------------


def child(args: argparse.Namespace, workdir: str, **run: object) -> dict:
    cmd = [sys.executable, __file__, "--run", "--workdir", workdir,
           "--iterations", str(args.iterations), "--precision", args.precision]  # fmt: skip
    for key, value in run.items():
        if value is not None and value != "":
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    print(f"  running {' '.join(cmd[2:])} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"run failed with status {done.returncode}")
    out: dict = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"    {json.dumps({k: v for k, v in out.items() if k != 'losses'})}", file=sys.stderr)
    return out


def median_after_first(run: dict) -> float:
    times = run["per_iteration"]
    return statistics.median(times[1:] if len(times) > 1 else times)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def size_table(runs: list[dict]) -> None:
    print("| size | way | s/iteration | peak RSS measured (GiB) | predicted (GiB) "
          "| predicted / measured |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|")
    for r in runs:
        way = (
            f"tiled, {r['tiles']} tiles of ≤{r['core']} px ({r['grams']})"
            if r["tiled"]
            else "untiled"
        )
        ratio = r["predicted_bytes"] / r["maxrss_bytes"]
        print(f"| {r['size']} | {way} | {median_after_first(r):.2f} | {gib(r['maxrss_bytes'])} "
              f"| {gib(r['predicted_bytes'])} | {ratio:.2f} |")  # fmt: skip


def seams(args: argparse.Namespace, workdir: str) -> None:
    size = args.seams
    base = child(args, workdir, size=size, save="seams-untiled")
    untiled = np.load(Path(workdir) / "seams-untiled.npy")
    tiles = memory.make_tiles(size, args.tile, _layers())
    borders = [start for start, _ in tiles.rows[1:]]
    _, _, ref_ratio = seam_ratio(untiled, borders)
    print()
    print(f"### Tiled vs untiled at {size} px ({args.precision}, {args.iterations} iterations, "
          f"{tiles.count} tiles of {args.tile} px + {tiles.halo} px halo)")  # fmt: skip
    print()
    print("| way | s/iteration | final loss | vs untiled | border / interior mean abs Laplacian "
          "| peak RSS (GiB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    final = base["losses"][-1]
    print(f"| untiled | {median_after_first(base):.2f} | {final:.5g} | - | {ref_ratio:.3f} "
          f"| {gib(base['maxrss_bytes'])} |")  # fmt: skip
    for mode in args.grams_modes.split(","):
        run = child(args, workdir, size=size, core=args.tile, grams=mode, save=f"seams-{mode}")
        img = np.load(Path(workdir) / f"seams-{mode}.npy")
        border, inner, ratio = seam_ratio(img, borders)
        diff = 100 * (run["losses"][-1] - final) / final
        print(f"| tiled, Grams {mode} | {median_after_first(run):.2f} | {run['losses'][-1]:.5g} "
              f"| {diff:+.2f}% | {ratio:.3f} ({border:.4f} / {inner:.4f}) "
              f"| {gib(run['maxrss_bytes'])} |")  # fmt: skip


def _engine_module() -> Any:
    """bench/engine.py, by path (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_engine", _HERE / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512,1024,2048", help="untiled sizes")
    parser.add_argument("--tiled-sizes", default="4096", help="sizes run in tiles")
    parser.add_argument("--budget", default="6GB", help="the tiled runs' memory budget")
    parser.add_argument("--seams", type=int, default=1024, help="tiled vs untiled size; 0: no")
    parser.add_argument("--tile", type=int, default=512, help="tile core for --seams")
    parser.add_argument("--grams-modes", default="previous,first-pass")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    # child mode
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grams", default="first-pass", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--limit", default="", help=argparse.SUPPRESS)  # a run's budget
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_one(args)))
        return

    machine = _engine_module().machine
    load_before = os.getloadavg()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    tiled = [int(s) for s in args.tiled_sizes.split(",") if s.strip()]
    print(f"prints benchmark: untiled {sizes}, tiled {tiled} within {args.budget}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as workdir:
        runs = [child(args, workdir, size=s) for s in sizes]
        runs += [child(args, workdir, size=s, limit=args.budget) for s in tiled]
        print(f"# prints benchmark, {dt.date.today().isoformat()}: {args.precision}, "
              f"{args.iterations} iterations, random weights, square images")  # fmt: skip
        print(f"# {machine()}")
        print(f"# load average (1 min) before {load_before[0]:.2f}")
        print()
        if runs:
            size_table(runs)
        if args.seams:
            seams(args, workdir)
        print()
        print(f"# load average (1 min) after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
