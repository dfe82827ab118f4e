"""``stylequeue transfer``: run the engine locally, no server needed.

Everything cheap is checked first (files, parameters, the output path) so a typo fails in
a second with one line, before TensorFlow is imported and VGG19 is built.
Exit status: 0 done, 1 the engine could not run (weights), 2 bad input, 130 stopped by
Ctrl-C (the best image so far is still written).
"""

from __future__ import annotations

import importlib
import os
import resource
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import click

from stylequeue.shared.memory import (
    BudgetError,
    format_bytes,
    make_tiles,
    output_shape,
    parse_bytes,
)
from stylequeue.shared.params import PRECISIONS, PRESETS, ParamError, TransferParams
from stylequeue.shared.settings import EngineSettings, SettingsError, load_engine_settings


def _fail(field: str, message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit: the CLI's only error format."""
    text = " ".join(str(message).split())  # never more than one line
    click.echo(f"error: {field}: {text}", err=True)
    sys.exit(code)


def _load(field: str, path: str) -> Any:
    from stylequeue.worker.engine.imageio import as_rgb_array, load_image

    p = Path(path)
    if not p.is_file():
        _fail(field, f"no such file: {path}")
    try:
        return as_rgb_array(load_image(p))
    except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, bombs...
        _fail(field, f"cannot read image {path}: {exc}")


@click.command("transfer")
@click.argument("content", metavar="CONTENT")
@click.argument("styles", nargs=-1, required=True, metavar="STYLE [STYLE ...]")
@click.option("-o", "--output", required=True, help="Where to write the result (.png).")
@click.option(
    "--preset",
    default="default",
    show_default=True,
    help=f"Starting parameters: {', '.join(PRESETS)}.",
)
@click.option("--iterations", help="Optimisation steps (preset decides if not given).")
@click.option("--size", "max_size", help="Longest side of the output in pixels (a cap).")
@click.option(
    "--weights",
    default=None,
    help="VGG19 weights: imagenet, random, or a .h5/.keras path "
    "[default: $STYLEQUEUE_VGG19_WEIGHTS, else imagenet].",
)
@click.option("--seed", help="Seed for noise init (same inputs + seed + machine = same image).")
@click.option(
    "--precision",
    help=f"auto (bf16 where the hardware has it), {' or '.join(PRECISIONS)} "
    "[default: $STYLEQUEUE_PRECISION, else auto].",
)
@click.option("--preserve-colors", is_flag=True, default=None, help="Keep the content's colours.")
@click.option("--style-weight", help="Weight of the style loss.")
@click.option("--content-weight", help="Weight of the content loss.")
@click.option("--tv-weight", help="Weight of the total-variation (smoothness) loss.")
@click.option("--learning-rate", help="Adam learning rate on [0, 1] pixels.")
@click.option("--style-blend", help="One weight per style image, e.g. 0.7,0.3.")
@click.option("--style-scale", help="Style image size relative to the content's.")
@click.option("--init", help="Start from 'content' or 'noise'.")
@click.option("--optimizer", help="adam (the default) or lbfgs.")
@click.option("--scales", help="Coarse to fine: paint at 1/2, 1/4... of --size first (1: off).")
@click.option("--lbfgs-history", help="Update pairs L-BFGS keeps (default 10).")
@click.option(
    "--snapshots",
    "snapshot_dir",
    default=None,
    help="Directory for intermediate images (every --snapshot-every iterations).",
)
@click.option("--snapshot-every", help="Iterations between snapshots (preset decides).")
@click.option(
    "--memory",
    default=None,
    help="Memory budget, e.g. 6GB: above what fits untiled the picture is painted in tiles, "
    "and a job that fits no way is refused before any work "
    "[default: $STYLEQUEUE_WORKER_MEMORY, else what the machine has free].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def transfer(
    content: str,
    styles: tuple[str, ...],
    output: str,
    preset: str,
    weights: str | None,
    snapshot_dir: str | None,
    memory: str | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Paint CONTENT in the style of STYLE (several styles are blended) and write -o OUT.png.

    On your own machine no service's caps apply: any --size, within the memory budget.
    """
    knobs = _engine_knobs(weights, options.pop("precision"), memory)
    params = _params(preset, knobs, options, len(styles), snapshots=snapshot_dir is not None)
    out = _output_path(output)
    snaps = _snapshot_dir(snapshot_dir)

    content_arr = _load("content", content)
    style_arrs = [_load("style", s) for s in styles]

    result = _paint(content_arr, style_arrs, params, knobs, snaps, quiet)
    _write_result(out, result)
    if result.stopped:
        sys.exit(130)


# ---- the cheap checks, before TensorFlow ----------------------------------------------------


def _engine_knobs(
    weights: str | None, precision: str | None, memory: str | None = None
) -> EngineSettings:
    """The engine settings (STYLEQUEUE_VGG19_WEIGHTS, _PRECISION, _ENGINE_*,
    _WORKER_MEMORY), with --weights, --precision and --memory over them."""
    try:
        knobs = load_engine_settings()
    except SettingsError as exc:
        _fail("settings", str(exc))
    budget = knobs.worker_memory
    if memory is not None:
        try:
            budget = parse_bytes(memory)
        except ValueError as exc:
            _fail("memory", str(exc))
    return replace(
        knobs,
        vgg19_weights=weights or knobs.vgg19_weights,
        precision=precision or knobs.precision,
        worker_memory=budget,
    )


def _params(
    preset: str, knobs: EngineSettings, options: dict[str, Any], n_styles: int, *, snapshots: bool
) -> TransferParams:
    """The options as checked TransferParams. An ``auto`` precision is left out here and
    resolved for this machine by :func:`_paint`, once TensorFlow is loaded."""
    values = {k: v for k, v in options.items() if v is not None}
    if knobs.precision != "auto":
        values["precision"] = knobs.precision
    if not snapshots:
        values["snapshot_every"] = 0  # nobody will look at them
    try:
        return TransferParams.from_inputs(
            {"preset": preset, "weights": knobs.vgg19_weights, **values},
            n_styles=n_styles,
            allow_weight_paths=True,
        )
    except ParamError as exc:
        _fail(exc.field, exc.message)


def _output_path(output: str) -> Path:
    out = Path(output)
    if out.suffix.lower() != ".png":
        _fail("output", f"must end with .png, got {output}")
    if not out.parent.is_dir():
        _fail("output", f"directory does not exist: {out.parent}")
    return out


def _snapshot_dir(snapshot_dir: str | None) -> Path | None:
    if snapshot_dir is None:
        return None
    snaps = Path(snapshot_dir)
    try:
        snaps.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail("snapshots", f"cannot create {snapshot_dir}: {exc.strerror}")
    return snaps


# ---- the engine -----------------------------------------------------------------------------


def _paint(
    content: Any,
    styles: list[Any],
    params: TransferParams,
    knobs: EngineSettings,
    snaps: Path | None,
    quiet: bool,
) -> Any:
    """Run the engine with a progress bar and Ctrl-C handling; its errors become one line."""
    _import_tensorflow_quietly()
    from stylequeue.worker.engine import WeightsUnavailable, encode_png
    from stylequeue.worker.engine import transfer as run_transfer
    from stylequeue.worker.engine.hardware import resolve_precision

    params = replace(params, precision=resolve_precision(knobs.precision))
    budget = _budget(knobs)
    _announce_plan(content, params, budget, quiet)

    stop = threading.Event()
    previous = _install_sigint(stop)
    try:
        with _Progress(params.iterations, quiet) as progress:

            def on_iteration(report: Any) -> None:
                progress.update(report)
                if snaps is not None and report.has_snapshot:
                    path = snaps / f"iter_{report.iteration:05d}.png"
                    path.write_bytes(encode_png(report.snapshot))

            return run_transfer(
                content,
                styles,
                params,
                weights=knobs.vgg19_weights,
                on_iteration=on_iteration,
                should_stop=stop.is_set,
                xla=knobs.xla,
                deterministic=knobs.deterministic,
                memory_budget=budget,
                on_tile=progress.tile,
            )
    except WeightsUnavailable as exc:
        _fail("weights", str(exc), code=1)
    except ParamError as exc:
        _fail(exc.field, exc.message)
    except BudgetError as exc:
        _fail("memory", f"{exc}; lower --size or raise --memory")
    except ValueError as exc:  # e.g. an image too small for the layers used
        _fail("input", str(exc))
    except FloatingPointError as exc:  # the loss diverged
        _fail("loss", str(exc), code=1)
    finally:
        _restore_sigint(previous)


def _budget(knobs: EngineSettings) -> int | None:
    """--memory or STYLEQUEUE_WORKER_MEMORY, else what this machine has free: the GPU's free
    memory where the engine computes on one, else the memory available (within a
    container's limit) plus what this process holds."""
    if knobs.worker_memory is not None:
        return knobs.worker_memory
    from stylequeue.worker.engine import hardware

    if hardware.device_kind() == "gpu":
        return hardware.query_gpu_free_memory(os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # no /proc: the high-water mark will do
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return hardware.cpu_budget(rss)


def _announce_plan(content: Any, params: TransferParams, budget: int | None, quiet: bool) -> None:
    """Refuse, before any work, a job that fits the budget no way; say so when it is to be
    painted in tiles."""
    from stylequeue.worker.engine.memory import plan_job

    try:
        layout = plan_job(content, params, budget)
    except BudgetError as exc:
        _fail("memory", f"{exc}; lower --size or raise --memory")
    if layout.core is None or quiet or budget is None:
        return
    layers = [n for n, w in params.content_layers + params.style_layers if w > 0]
    height, width = content.shape[:2]
    size = output_shape(width, height, params.max_size)
    tiles = make_tiles(size, layout.core, layers)
    click.echo(
        f"painting {size[1]}x{size[0]} px in {tiles.count} tiles: untiled it needs about "
        f"{format_bytes(layout.untiled_estimate)}, the memory budget is {format_bytes(budget)} "
        f"(tiled: about {format_bytes(layout.estimate)})",
        err=True,
    )


def _write_result(out: Path, result: Any) -> None:
    from stylequeue.worker.engine import encode_png

    out.write_bytes(encode_png(result.image))
    note = " (stopped early)" if result.stopped else ""
    click.echo(
        f"wrote {out} ({result.image.shape[1]}x{result.image.shape[0]}): best loss "
        f"{result.best_loss:.4g} at iteration {result.best_iteration}/{result.iterations_done}"
        f"{note}, {result.seconds:.1f}s, weights {result.weights}",
        err=True,
    )


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN / CPU-feature notes) hidden.

    TF 2.21 logs those before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot
    silence them; stderr's file descriptor is pointed at /dev/null for the import only.
    Python errors still surface: they are raised after the descriptor is restored.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        importlib.import_module("tensorflow")  # no real fd 2 (a test runner's capture)

        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        importlib.import_module("tensorflow")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _install_sigint(stop: threading.Event) -> Any:
    """First Ctrl-C: stop after this iteration and still write the best image; second: abort."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(
            "\nstopping after this iteration, or this tile (Ctrl-C again to abort)", err=True
        )

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


class _Progress:
    """A rich progress bar on stderr: iteration, loss, elapsed and ETA; for a picture painted
    in tiles, how far the current iteration is (tiles done)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        return self

    def _start(self) -> None:
        """Started on the first report, so a failure while VGG19 loads leaves no empty bar."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("iteration"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tile]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("transfer", total=self.total, loss="-", tile="")

    def update(self, report: Any) -> None:
        if self.quiet:
            return
        if self._progress is None:
            self._start()
        self._progress.update(
            self._task, completed=report.iteration, loss=f"{report.loss:.4g}", tile=""
        )

    def tile(self, report: Any) -> None:
        """A tile of a picture painted in tiles is done (``worker.engine.tiling.TileReport``)."""
        if self.quiet:
            return
        if self._progress is None:
            self._start()
        what = "preparing" if report.phase == "targets" else f"iteration {report.iteration}"
        self._progress.update(self._task, tile=f"{what}: tile {report.done}/{report.total}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
