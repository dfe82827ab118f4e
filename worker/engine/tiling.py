"""Tiled optimisation: any size within a memory budget, and the same picture as untiled.

Above what fits (``shared.memory.plan``), the image is optimised in tiles whose working set
does. The exact version: each tile goes through VGG19 with a halo as wide as the deepest
layer's receptive field (``shared.memory.halo``: 96 px for block5_conv2), tile cores start on
multiples of 16 (the pooling grids line up), so every core feature is the whole image's; the
content loss is a sum over positions, so each tile adds its core's share; the style loss
needs the whole image's Gram matrices, which are sums over the cores.

Which Grams the style gradient is taken at (``grams``):

- ``"first-pass"`` (the default): a forward pass over every tile first, then the gradient
  pass: the exact gradient, so the picture is the untiled one (the same final loss at
  1024 px), for about 1.2-1.3 x the time of one pass.
- ``"previous"``: the Grams the previous iteration's tile pass summed, one pass an
  iteration; the gradient's style part lags one step of the image (+1% final loss at
  1024 px after 5 iterations). The loss reported is exact (this iteration's partials,
  summed after its pass). Iteration 1 (and a resumed run's first) takes a forward pass
  first.

``bench/engine.py --prints`` measures both (``bench/RESULTS.md``).

The optimiser (Adam, the same arithmetic as ``losses.adam_update``) and its state live on the
host for the whole image, in NumPy, updated in row bands to bound the temporaries; so does
total variation (a sum over neighbours) and its gradient. Progress comes per tile
(``on_tile``), and ``should_stop`` is asked after every tile: a cancel takes effect within one
tile, dropping the unfinished iteration (the image stays the last whole iteration's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from keras import ops

from stylequeue.shared.memory import CHANNELS, Tiles, block, make_tiles
from stylequeue.shared.params import TransferParams
from stylequeue.worker.engine import core, imageio, tile_step_tf
from stylequeue.worker.engine.extractor import Extractor, get_extractor
from stylequeue.worker.engine.losses import hyper_vector
from stylequeue.worker.engine.state import EngineState, StateError

GRAMS_MODES = ("previous", "first-pass")
BAND_ROWS = 256  # rows per band of the host-side updates (bounds their temporaries)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TileReport:
    """Progress within an iteration: ``done`` of ``total`` tiles of ``phase``.

    ``phase``: ``targets`` (the content's and styles' features, before iteration 1),
    ``grams`` (a forward pass for the Grams), ``step`` (the gradient pass). ``iteration`` is
    the iteration the pass belongs to (0 for ``targets``).
    """

    iteration: int
    phase: str
    done: int
    total: int
    elapsed: float


@dataclass
class _Stop:
    """``should_stop`` asked after each tile; remembers a yes."""

    ask: Callable[[], bool] | None
    stopped: bool = False

    def __call__(self) -> bool:
        if not self.stopped and self.ask is not None and self.ask():
            self.stopped = True
        return self.stopped


@dataclass
class _Job:
    extractor: Extractor
    params: TransferParams
    content: F32  # HxWx3 in [0, 1]
    tiles: Tiles
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    content_lw: np.ndarray
    style_lw: np.ndarray
    hyper: np.ndarray
    content_targets: list[F32] = field(default_factory=list)  # whole image, per layer
    style_targets: list[F32] = field(default_factory=list)  # blended Grams
    content_grams: list[F32] | None = None  # the content image's own Grams (init content)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.content.shape[0]), int(self.content.shape[1])

    def content_scales(self) -> np.ndarray:
        h, w = self.shape
        return np.array(
            [1.0 / (_positions(h, w, n) * CHANNELS[block(n)]) for n in self.content_layers],
            dtype=np.float32,
        )

    def style_scales(self, h: int, w: int) -> np.ndarray:
        return np.array([1.0 / _positions(h, w, n) for n in self.style_layers], np.float32)


def _positions(h: int, w: int, layer: str) -> int:
    cell: int = 2 ** (block(layer) - 1)
    return (h // cell) * (w // cell)


def _windows(tiles: Tiles, h: int, w: int) -> Iterator[tuple[tuple[int, int, int, int], Any]]:
    """Each tile: its padded window (y0, y1, x0, x1) and its core relative to the window."""
    for r0, r1 in tiles.rows:
        py0, py1 = tiles.padded(r0, r1, h)
        for c0, c1 in tiles.cols:
            px0, px1 = tiles.padded(c0, c1, w)
            box = np.array([r0 - py0, r1 - py0, c0 - px0, c1 - px0], dtype=np.int32)
            yield (py0, py1, px0, px1), box


def _tensor(image: np.ndarray, window: tuple[int, int, int, int]) -> Any:
    y0, y1, x0, x1 = window
    return ops.convert_to_tensor(np.ascontiguousarray(image[None, y0:y1, x0:x1]))


# ---- preparation: targets and Grams, tile by tile ------------------------------------------


def _forward_pass(
    job: _Job,
    image: F32,
    *,
    keep_content: bool,
    report: Callable[[int, int], None],
    stop: _Stop,
) -> tuple[list[F32], list[F32]] | None:
    """One forward pass over ``image`` in tiles: (content-layer features of the whole image
    if ``keep_content``, its Grams); None when stopped."""
    h, w = int(image.shape[0]), int(image.shape[1])
    tiles = make_tiles((h, w), job.tiles.core, job.content_layers + job.style_layers)
    forward = tile_step_tf.get_tile_forward(job.extractor, job.content_layers, job.style_layers)
    scales = ops.convert_to_tensor(job.style_scales(h, w))
    content: list[F32] = []
    if keep_content:
        for n in job.content_layers:
            cell = 2 ** (block(n) - 1)
            content.append(np.zeros((h // cell, w // cell, CHANNELS[block(n)]), np.float32))
    grams = [np.zeros((CHANNELS[block(n)],) * 2, np.float64) for n in job.style_layers]
    for done, (window, box) in enumerate(_windows(tiles, h, w), start=1):
        crops, partials = forward(_tensor(image, window), ops.convert_to_tensor(box), scales)
        if keep_content:
            for n, target, crop in zip(job.content_layers, content, crops, strict=True):
                cell = 2 ** (block(n) - 1)
                y0, x0 = (window[0] + int(box[0])) // cell, (window[2] + int(box[2])) // cell
                arr = np.asarray(ops.convert_to_numpy(crop))[0]
                target[y0 : y0 + arr.shape[0], x0 : x0 + arr.shape[1]] = arr
        for gram, part in zip(grams, partials, strict=True):
            gram += np.asarray(ops.convert_to_numpy(part), np.float64)
        report(done, tiles.count)
        if stop():
            return None
    return content, [g.astype(np.float32) for g in grams]


def _prepare(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    weights: str,
    tile_core: int,
    on_tile: Callable[[TileReport], None] | None,
    stop: _Stop,
    started: float,
) -> _Job | None:
    params.validate(n_styles=len(styles), allow_weight_paths=True)
    content_layers, content_lw = core._active(params.content_layers)
    style_layers, style_lw = core._active(params.style_layers)
    extractor = get_extractor(weights, content_layers + style_layers, params.precision)
    content01 = core._prepare_content(content, params.max_size, extractor.min_side)
    h, w = int(content01.shape[0]), int(content01.shape[1])
    job = _Job(
        extractor=extractor,
        params=replace(params, weights=weights),
        content=content01,
        tiles=make_tiles((h, w), tile_core, content_layers + style_layers),
        content_layers=content_layers,
        style_layers=style_layers,
        content_lw=content_lw,
        style_lw=style_lw,
        hyper=hyper_vector(params),
    )
    blend = params.blend(len(styles))
    longest = round(params.style_scale * max(h, w))
    style_images = [
        core._prepare_style(s, longest, extractor.min_side)
        for s, b in zip(styles, blend, strict=True)
        if b > 0
    ]
    weights_used = [b for b in blend if b > 0]
    total = job.tiles.count + sum(
        make_tiles(s.shape[:2], tile_core, content_layers + style_layers).count
        for s in style_images
    )
    done = 0

    def report(_: int, __: int) -> None:
        nonlocal done
        done += 1
        if on_tile is not None:
            on_tile(TileReport(0, "targets", done, total, time.perf_counter() - started))

    passed = _forward_pass(job, content01, keep_content=True, report=report, stop=stop)
    if passed is None:
        return None
    job.content_targets, job.content_grams = passed
    blended: list[F32] | None = None
    for image, b in zip(style_images, weights_used, strict=True):
        styled = _forward_pass(job, image, keep_content=False, report=report, stop=stop)
        if styled is None:
            return None
        grams = [np.float32(b) * g for g in styled[1]]
        blended = grams if blended is None else [x + y for x, y in zip(blended, grams, strict=True)]
    assert blended is not None  # validate(): at least one style with a weight above 0
    job.style_targets = blended
    return job


# ---- host-side arithmetic -------------------------------------------------------------------


def _bands(h: int) -> Iterator[slice]:
    for r in range(0, h, BAND_ROWS):
        yield slice(r, min(h, r + BAND_ROWS))


def total_variation(x: F32, weight: float, grad: F32) -> float:
    """``weight`` x the sum of absolute neighbour differences of ``x`` (as
    ``losses.total_variation``); adds its gradient to ``grad``. In row bands."""
    h = x.shape[0]
    total = 0.0
    w = np.float32(weight)
    for r in range(0, h - 1, BAND_ROWS):  # vertical neighbours: rows r..e-1 against r+1..e
        e = min(h - 1, r + BAND_ROWS)
        d = x[r + 1 : e + 1] - x[r:e]
        total += float(np.abs(d).sum(dtype=np.float64))
        sign = np.sign(d)
        sign *= w
        grad[r + 1 : e + 1] += sign
        grad[r:e] -= sign
    for rows in _bands(h):  # horizontal neighbours
        band = x[rows]
        d = band[:, 1:] - band[:, :-1]
        total += float(np.abs(d).sum(dtype=np.float64))
        sign = np.sign(d)
        sign *= w
        grad[rows, 1:] += sign
        grad[rows, :-1] -= sign
    return weight * total


def adam_host(x: F32, grad: F32, m: F32, v: F32, step: int, hyper: np.ndarray) -> None:
    """``losses.adam_update`` in place, in NumPy float32, band by band (then clip to [0, 1])."""
    lr, beta_1, beta_2, eps, omb_1, omb_2 = (np.float32(hyper[i]) for i in (3, 4, 5, 6, 7, 8))
    t = np.float32(step)
    alpha = lr * np.sqrt(np.float32(1) - beta_2**t) / (np.float32(1) - beta_1**t)
    for rows in _bands(x.shape[0]):
        g, mb, vb, xb = grad[rows], m[rows], v[rows], x[rows]
        mb += (g - mb) * omb_1
        vb += (np.square(g) - vb) * omb_2
        xb -= (mb * alpha) / (np.sqrt(vb) + eps)
        np.clip(xb, 0.0, 1.0, out=xb)


def style_loss(grams: Sequence[F32], job: _Job) -> float:
    """The weighted style loss of these Grams (``losses.style_loss``)."""
    terms = [
        float(np.mean(np.square(g.astype(np.float64) - s))) * float(lw)
        for g, s, lw in zip(grams, job.style_targets, job.style_lw, strict=True)
    ]
    return float(job.hyper[1]) * sum(terms) / len(terms)


# ---- the loop -------------------------------------------------------------------------------


@dataclass
class _State:
    x: F32
    m: F32
    v: F32
    best_x: F32
    best_loss: float
    best_iteration: int
    elapsed: float

    def note(self, loss: float, k: int) -> bool:
        """Iteration ``k``'s loss, measured on ``x`` before its update: keep ``x`` as the
        best image if it is the lowest yet (True)."""
        if loss >= self.best_loss:
            return False
        np.copyto(self.best_x, self.x)
        self.best_loss, self.best_iteration = loss, k
        return True


def _check_mode(grams: str) -> None:
    if grams not in GRAMS_MODES:
        raise ValueError(f"grams must be one of {', '.join(GRAMS_MODES)}, got {grams!r}")


def _start_state(job: _Job, resume: EngineState | None) -> _State:
    if resume is None:
        if job.params.init == "noise":
            rng = np.random.default_rng(job.params.seed)
            x = rng.random(job.content.shape, dtype=np.float32)
        else:
            x = job.content.copy()
        zeros = np.zeros_like(x)
        return _State(x, zeros, zeros.copy(), x.copy(), math.inf, 0, 0.0)
    resume.check(job.content.shape)
    if resume.iteration >= job.params.iterations:
        raise StateError(
            f"cannot resume at iteration {resume.iteration} of {job.params.iterations}"
        )
    arrays = (resume.image, resume.adam_m, resume.adam_v, resume.best_image)
    x, m, v, best = (np.array(a, dtype=np.float32, copy=True) for a in arrays)
    return _State(x, m, v, best, resume.best_loss, resume.best_iteration, resume.elapsed)


class _Pass:
    """One iteration's tile passes: the Grams (if needed) and the gradient."""

    def __init__(self, job: _Job, on_tile: Callable[[TileReport], None] | None, stop: _Stop,
                 clock: Callable[[], float], mode: str) -> None:  # fmt: skip
        self.job = job
        self.mode = mode
        self.previous: list[F32] | None = None  # the Grams the last gradient pass summed
        self.on_tile = on_tile
        self.stop = stop
        self.clock = clock
        self.step = tile_step_tf.get_tile_step(job.extractor, job.content_layers, job.style_layers)
        h, w = job.shape
        self.tensors = {
            "content_scales": ops.convert_to_tensor(job.content_scales()),
            "style_scales": ops.convert_to_tensor(job.style_scales(h, w)),
            "content_lw": ops.convert_to_tensor(job.content_lw),
            "style_lw": ops.convert_to_tensor(job.style_lw),
            "hyper": ops.convert_to_tensor(job.hyper),
            "style_targets": [ops.convert_to_tensor(s) for s in job.style_targets],
        }

    def losses_and_gradient(self, x: F32, grad: F32, k: int) -> tuple[float, float, float] | None:
        """Iteration ``k`` at ``x``: ``grad`` filled, (content, style, tv) losses returned;
        None when stopped. The style gradient at the previous pass's Grams, or at a fresh
        forward pass's (``first-pass``, and whenever there is no previous pass)."""
        job = self.job
        extra = self.mode == "first-pass" or self.previous is None
        count = job.tiles.count
        total = count * (2 if extra else 1)
        used = self.grams(x, k, 0, total) if extra else self.previous
        if used is None:
            return None
        passed = self.gradient(x, used, grad, k, count if extra else 0, total)
        if passed is None:
            return None
        content, self.previous = passed
        tv = total_variation(x, float(job.hyper[2]), grad)
        return content, style_loss(self.previous, job), tv

    def grams(self, x: F32, iteration: int, offset: int, total: int) -> list[F32] | None:
        def report(done: int, _: int) -> None:
            self._report(iteration, "grams", offset + done, total)

        passed = _forward_pass(self.job, x, keep_content=False, report=report, stop=self.stop)
        return None if passed is None else passed[1]

    def gradient(
        self, x: F32, grams: list[F32], grad: F32, iteration: int, offset: int, total: int
    ) -> tuple[float, list[F32]] | None:
        """Fill ``grad`` with the VGG19 losses' gradient at ``x`` (style part at ``grams``);
        (the content loss, the Grams of ``x``), or None when stopped."""
        job, t = self.job, self.tensors
        h, w = job.shape
        grad.fill(0.0)
        content = 0.0
        sums = [np.zeros((CHANNELS[block(n)],) * 2, np.float64) for n in job.style_layers]
        gram_tensors = [ops.convert_to_tensor(g) for g in grams]
        for done, (window, box) in enumerate(_windows(job.tiles, h, w), start=1):
            targets = []
            for n, target in zip(job.content_layers, job.content_targets, strict=True):
                cell = 2 ** (block(n) - 1)
                y0, y1 = (window[0] + int(box[0])) // cell, (window[0] + int(box[1])) // cell
                x0, x1 = (window[2] + int(box[2])) // cell, (window[2] + int(box[3])) // cell
                crop = np.ascontiguousarray(target[None, y0:y1, x0:x1])
                targets.append(ops.convert_to_tensor(crop))
            tile_grad, tile_content, partials = self.step(
                _tensor(x, window), ops.convert_to_tensor(box), targets, gram_tensors,
                t["style_targets"], t["content_scales"], t["style_scales"], t["content_lw"],
                t["style_lw"], t["hyper"],
            )  # fmt: skip
            y0, y1, x0, x1 = window
            grad[y0:y1, x0:x1] += np.asarray(ops.convert_to_numpy(tile_grad))[0]
            content += float(ops.convert_to_numpy(tile_content))
            for s, p in zip(sums, partials, strict=True):
                s += np.asarray(ops.convert_to_numpy(p), np.float64)
            self._report(iteration, "step", offset + done, total)
            if done < job.tiles.count and self.stop():  # after the last, the update is cheap
                return None
        return content, [s.astype(np.float32) for s in sums]

    def _report(self, iteration: int, phase: str, done: int, total: int) -> None:
        if self.on_tile is not None:
            self.on_tile(TileReport(iteration, phase, done, total, self.clock()))


def transfer_tiled(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    *,
    weights: str,
    tile: int,
    grams: str = "first-pass",
    on_iteration: Callable[[core.IterationReport], None] | None = None,
    on_tile: Callable[[TileReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: EngineState | None = None,
    checkpoint_due: Callable[[int], bool] | None = None,
    on_checkpoint: Callable[[EngineState], None] | None = None,
) -> core.TransferResult:
    """:func:`core.transfer` in tiles of at most ``tile`` px (core; plus the halo): the
    same contract (callbacks, checkpoints, resume, best image), plus ``on_tile`` and a stop
    within one tile. ``grams``: see the module's docstring."""
    _check_mode(grams)
    started = time.perf_counter()
    stop = _Stop(should_stop)
    job = _prepare(content, list(styles), params, weights, tile, on_tile, stop, started)
    if job is None:  # stopped while preparing: the content as it is
        return _result(content, params, weights, None, 0, started, [], None)
    state = _start_state(job, resume)
    first = 1 if resume is None else resume.iteration + 1
    loop_start, elapsed_before = time.perf_counter(), state.elapsed

    def clock() -> float:
        return elapsed_before + (time.perf_counter() - loop_start)

    runner = _Pass(job, on_tile, stop, clock, grams)
    if resume is None and job.params.init == "content":
        runner.previous = job.content_grams  # x0 is the content: its Grams are known
    n, every = job.params.iterations, job.params.snapshot_every
    grad = np.zeros_like(state.x)
    history: list[dict[str, Any]] = []
    done = first - 1
    for k in range(first, n + 1):
        losses = runner.losses_and_gradient(state.x, grad, k)
        if losses is None:  # stopped within the iteration: it is dropped
            _last_checkpoint(job, state, k - 1, first, checkpoint_due, on_checkpoint)
            break
        loss = sum(losses)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss} at iteration {k}; lower learning_rate or the weights"
            )
        done = k
        is_best = state.note(loss, k)
        adam_host(state.x, grad, state.m, state.v, k, job.hyper)
        state.elapsed = clock()
        render = None
        if on_iteration is not None and ((every and k % every == 0) or k == n):
            # made now: the host image changes in place, and an iteration takes seconds here
            render = partial(np.asarray, _finish(state.x, job))
        report = core.IterationReport(k, loss, *losses, state.elapsed, render, is_best)
        history.append(report.as_dict())
        if on_iteration is not None:
            on_iteration(report)
        if k < n:
            _offer_checkpoint(state, k, checkpoint_due, on_checkpoint)
            if stop():
                break
    return _result(content, params, weights, job, done, started, history, state,
                   stopped=stop.stopped)  # fmt: skip


def _last_checkpoint(
    job: _Job,
    state: _State,
    k: int,
    first: int,
    checkpoint_due: Callable[[int], bool] | None,
    on_checkpoint: Callable[[EngineState], None] | None,
) -> None:
    """Stopped within iteration k + 1: iteration k's state (this run's) is the last whole
    one; offer it as a checkpoint (a preempted worker saves it so nothing is lost)."""
    if first <= k < job.params.iterations:
        _offer_checkpoint(state, k, checkpoint_due, on_checkpoint)


def _offer_checkpoint(
    state: _State,
    k: int,
    checkpoint_due: Callable[[int], bool] | None,
    on_checkpoint: Callable[[EngineState], None] | None,
) -> None:
    if on_checkpoint is not None and checkpoint_due is not None and checkpoint_due(k):
        on_checkpoint(_engine_state(k, state))


def _finish(x01: F32, job: _Job) -> np.ndarray:
    """Float [0, 1] image -> uint8, with the content's colours if preserve_colors; in row
    bands (both are per pixel), so a print's snapshot costs no full-size float64 copies."""
    out = np.empty(x01.shape, dtype=np.uint8)
    for rows in _bands(x01.shape[0]):
        band = x01[rows]
        if job.params.preserve_colors:
            band = imageio.preserve_colors(band, job.content[rows])
        out[rows] = imageio.to_uint8(band)
    return out


def _engine_state(k: int, state: _State) -> EngineState:
    return EngineState(
        iteration=k, image=state.x.copy(), adam_m=state.m.copy(), adam_v=state.v.copy(),
        best_image=state.best_x.copy(), best_loss=state.best_loss,
        best_iteration=state.best_iteration, elapsed=state.elapsed,
    )  # fmt: skip


def _result(
    content: np.ndarray,
    params: TransferParams,
    weights: str,
    job: _Job | None,
    done: int,
    started: float,
    history: list[dict[str, Any]],
    state: _State | None,
    *,
    stopped: bool = True,
) -> core.TransferResult:
    if job is None or state is None:
        image = imageio.resize_max(imageio.as_rgb_array(content), params.max_size)
        best_loss, best_iteration = math.inf, 0
    else:
        image = _finish(state.best_x, job)
        best_loss, best_iteration = state.best_loss, state.best_iteration
        if best_iteration == 0:  # no whole iteration: the image it started from
            image = _finish(state.x, job)
    return core.TransferResult(
        image=image,
        best_iteration=best_iteration,
        best_loss=best_loss,
        iterations_done=done,
        stopped=stopped,
        history=history,
        weights=weights,
        params=replace(params, weights=weights),
        seconds=time.perf_counter() - started,
    )
