"""Engine speed benchmark: the fused engine (float32, mixed_bfloat16) vs the article's loop.

    python bench/engine.py --size 256 --iterations 20
    python bench/engine.py --prints [...]   # prints: size, memory, tiles (bench/prints.py)

Each variant runs in its own process (this script re-invoked with ``--variant``), so its
peak RSS is its own (``ru_maxrss`` of that process) and no variant warms another's caches.
Seconds per iteration are the median after ``--warmup`` iterations (the first includes
tracing). Random weights (seeded), synthetic images unless ``--content/--style`` are given.
Quality: every variant's best image is re-scored with float32 features in one more process,
so bfloat16's result is judged by the same yardstick as float32's.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from stylequeue.shared.params import TransferParams  # noqa: E402

VARIANTS = ("engine-float32", "engine-bf16", "naive")


# ---- inputs -------------------------------------------------------------------------------


def synthetic_content(size: int) -> np.ndarray:
    """A photo-like 4:3 image: colour gradients and soft blobs (deterministic)."""
    h, w = round(size * 3 / 4), size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin((x + y) / (size / 16))], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(size / 20, size / 6)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + rng.uniform(0, 1, 3) * blob
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def synthetic_style(size: int) -> np.ndarray:
    """A 'painting': swirling two-colour bands with a little noise."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    bands = np.sin(x / 5 + 3 * np.sin(y / 17)) + 0.3 * rng.standard_normal((size, size))
    mask = (bands > 0)[..., None]
    img = np.where(mask, [0.9, 0.75, 0.2], [0.1, 0.2, 0.55])
    return (img * 255).astype(np.uint8)


def load_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    from stylequeue.worker.engine.imageio import as_rgb_array, load_image, resize_max

    if args.content:
        content = resize_max(as_rgb_array(load_image(args.content)), args.size)
    else:
        content = synthetic_content(args.size)
    style = as_rgb_array(load_image(args.style)) if args.style else synthetic_style(args.size)
    return content, style


def bench_params(args: argparse.Namespace, precision: str = "float32") -> TransferParams:
    return replace(
        TransferParams(),
        iterations=args.iterations,
        max_size=args.size,
        snapshot_every=0,
        precision=precision,
    )


# ---- one variant (child process) -----------------------------------------------------------


def run_variant(args: argparse.Namespace) -> dict:
    content, style = load_inputs(args)
    started = time.perf_counter()
    stamps: list[float] = []
    losses: list[float] = []
    if args.variant == "naive":
        naive_reference = _load_sibling("naive_reference")
        from stylequeue.worker.engine.imageio import resize_longest, to_float01

        content01 = to_float01(content)
        style01 = to_float01(resize_longest(style, max(content.shape[:2])))

        def note(i: int, loss: float, elapsed: float) -> None:
            stamps.append(elapsed)
            losses.append(loss)

        best, _ = naive_reference.run(content01, style01, bench_params(args), on_iteration=note)
        best_u8 = (np.clip(best, 0, 1) * 255).round().astype(np.uint8)
    else:
        from stylequeue.worker.engine import transfer

        precision = "mixed_bfloat16" if args.variant == "engine-bf16" else "float32"

        def on_iteration(report) -> None:  # type: ignore[no-untyped-def]
            stamps.append(report.elapsed)
            losses.append(report.loss)

        result = transfer(
            content,
            [style],
            bench_params(args, precision),
            weights="random",
            on_iteration=on_iteration,
        )
        best_u8 = result.image
    total = time.perf_counter() - started
    np.save(Path(args.workdir) / f"{args.variant}.npy", best_u8)
    per_iter = np.diff([0.0, *stamps]).tolist()
    return {
        "variant": args.variant,
        "per_iteration": per_iter,
        "losses": losses,
        "seconds_total": total,
        "seconds_to_first_iteration": total - sum(per_iter[1:]),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _load_sibling(name: str) -> object:
    """Import bench/<name>.py by path (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_eval(args: argparse.Namespace) -> dict:
    """Score every variant's best image with float32 features (same targets as the engine)."""
    from stylequeue.worker.engine import evaluate

    content, style = load_inputs(args)
    params = bench_params(args)
    scores = {}
    for variant in VARIANTS:
        path = Path(args.workdir) / f"{variant}.npy"
        if path.exists():
            image = np.load(path)
            scores[variant] = evaluate(image, content, [style], params, weights="random")["total"]
    return {"variant": "eval", "scores": scores}


# ---- the driver ----------------------------------------------------------------------------


def child(args: argparse.Namespace, variant: str, workdir: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--size",
        str(args.size),
        "--iterations",
        str(args.iterations),
        "--workdir",
        workdir,
    ]
    if args.content:
        cmd += ["--content", args.content]
    if args.style:
        cmd += ["--style", args.style]
    print(f"  running {variant} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"variant {variant} failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    tf_version = "?"
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            tf_version = md.version(dist)
            break
        except md.PackageNotFoundError:
            continue
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, TF {tf_version}"


def main() -> None:
    if "--prints" in sys.argv[1:]:
        prints = _load_sibling("prints")
        prints.main([a for a in sys.argv[1:] if a != "--prints"])  # type: ignore[attr-defined]
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="longest side in pixels")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="iterations left out of the median")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each variant N times (round-robin) and keep its least-disturbed run",
    )
    parser.add_argument("--content", help="content image (default: synthetic)")
    parser.add_argument("--style", help="style image (default: synthetic)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    parser.add_argument(
        "--precision",
        default="mixed_bfloat16",
        choices=("float32", "mixed_bfloat16"),
        help="--race only: the engine's precision (the variants' own names say theirs)",
    )
    parser.add_argument(
        "--race",
        nargs="?",
        const="adam:300,lbfgs:150,adam-s2:200,adam-s2-carry:200,lbfgs-s2:150",
        metavar="VARIANT:ITERATIONS,...",
        help="race optimisers and scales in one process, interleaved (bench/race.py); "
        "default %(const)s",
    )
    parser.add_argument(
        "--race-partial", metavar="FILE", help="--race: keep the curves so far in FILE (JSON)"
    )
    parser.add_argument(
        "--race-from", metavar="FILE", help="--race: print the tables of curves saved in FILE"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.iterations <= args.warmup:
        parser.error("--iterations must exceed --warmup")

    if args.variant:
        out = run_eval(args) if args.variant == "eval" else run_variant(args)
        print(json.dumps(out))
        return
    if args.race:
        run_race(args)
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(
        f"engine benchmark: {args.size} px, {args.iterations} iterations "
        f"(median after {args.warmup}), random weights",
        file=sys.stderr,
    )
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(max(1, args.repeat)):
            for v in variants:
                runs[v].append(child(args, v, workdir))
        # Other processes on a shared machine only ever slow a run down, so the run with
        # the lowest median is the closest to what the machine itself does.
        results = {v: min(rs, key=lambda r: _median(r, args.warmup)) for v, rs in runs.items()}
        scores = child(args, "eval", workdir)["scores"]
    print_table(args, results, scores, load_before, os.getloadavg())
    if args.json:
        print(json.dumps({"results": results, "f32_scores": scores}, indent=1))


def run_race(args: argparse.Namespace) -> None:
    """Time to loss: Adam vs L-BFGS, single scale vs coarse to fine (bench/race.py)."""
    race = _load_sibling("race")
    spec = race.parse_spec(args.race, args.iterations)  # type: ignore[attr-defined]
    content, style = load_inputs(args)
    base = replace(bench_params(args, args.precision), snapshot_every=0)
    load_before = os.getloadavg()
    started = time.perf_counter()
    if args.race_from:
        curves = race.load(Path(args.race_from).read_text())  # type: ignore[attr-defined]
    else:
        partial = Path(args.race_partial) if args.race_partial else None
        curves = race.race(content, style, base, spec, partial)  # type: ignore[attr-defined]
    header = [
        f"# race, {dt.date.today().isoformat()}: {args.size} px (longest side), "
        f"{args.precision}, random weights, variants interleaved one iteration each",
        f"# {machine()}",
        f"# load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
        f"{time.perf_counter() - started:.0f} s in all",
    ]
    print(race.report(curves, header))  # type: ignore[attr-defined]
    if args.json:
        print(race.dump(curves))  # type: ignore[attr-defined]


def _median(run: dict, warmup: int) -> float:
    return statistics.median(run["per_iteration"][warmup:])


def print_table(
    args: argparse.Namespace,
    results: dict,
    scores: dict,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> None:
    def median(v: str) -> float:
        return _median(results[v], args.warmup)

    naive = median("naive") if "naive" in results else None
    today = dt.date.today().isoformat()
    repeat = f", best of {args.repeat} runs" if args.repeat > 1 else ""
    print(
        f"# engine benchmark, {today}: {args.size} px (longest side), {args.iterations} "
        f"iterations, median after {args.warmup}{repeat}, random weights"
    )
    print(f"# {machine()}")
    print(f"# load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print()
    print("| variant | s/iteration (median) | speed-up vs naive | peak RSS (MiB) "
          "| first iteration done (s) | final loss | best image, float32 loss |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, r in results.items():
        m = median(v)
        speedup = f"{naive / m:.1f}x" if naive else "-"
        score = f"{scores[v]:.4g}" if v in scores else "-"
        print(
            f"| {v} | {m:.3f} | {speedup} | {r['maxrss_mib']:.0f} "
            f"| {r['seconds_to_first_iteration']:.1f} | {r['losses'][-1]:.4g} | {score} |"
        )
    if "engine-float32" in results and "engine-bf16" in results:
        f32 = results["engine-float32"]["losses"][-1]
        bf16 = results["engine-bf16"]["losses"][-1]
        print()
        print(f"bf16 final loss vs float32: {100 * (bf16 - f32) / f32:+.2f}%", end="")
        if "engine-float32" in scores and "engine-bf16" in scores:
            a, b = scores["engine-float32"], scores["engine-bf16"]
            print(f" (best images scored in float32: {100 * (b - a) / a:+.2f}%)")
        else:
            print()


if __name__ == "__main__":
    main()
