"""``transfer()``: content + style arrays and parameters in, best image and history out.

Pure: no Celery, Redis or Flask. The caller watches through ``on_iteration`` and cancels
through ``should_stop``; the worker's task turns those into a Redis stream and a cancel flag.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from keras import ops

from stylequeue.shared.params import TransferParams
from stylequeue.worker.engine import imageio, step_tf
from stylequeue.worker.engine.extractor import Extractor, get_extractor, weights_key
from stylequeue.worker.engine.losses import gram_matrix, hyper_vector, loss_terms
from stylequeue.worker.engine.state import EngineState, StateError

STYLE_CACHE_SIZE = 8  # style Gram sets kept per process (a few MB each at 512 px)


class IterationReport(NamedTuple):
    """What one iteration tells the caller (immutable; a NamedTuple because one is made per
    iteration on the loop thread, where a frozen dataclass costs several times as much).

    ``loss`` (the total) and its weighted parts describe the image the iteration started
    from; ``snapshot`` is the image after the iteration's update, given every
    ``snapshot_every`` iterations and on the last one (colour-preserved if asked). It is made
    on access, from whichever thread asks (the worker's snapshot writer, not the loop), and
    again on each access: ``has_snapshot`` says whether there is one without making it.
    """

    iteration: int  # 1-based
    loss: float  # total weighted loss
    content: float
    style: float
    tv: float
    elapsed: float  # seconds since the loop started
    render: Callable[[], np.ndarray] | None = None  # makes the snapshot
    is_best: bool = False

    @property
    def has_snapshot(self) -> bool:
        return self.render is not None

    @property
    def snapshot(self) -> np.ndarray | None:
        """HxWx3 uint8, made now (a copy of the image to the host, the colour post-process,
        the conversion); None on iterations without a snapshot."""
        return None if self.render is None else self.render()

    def as_dict(self) -> dict[str, float | int]:
        """The history entry (``TransferResult.history``): everything but the image."""
        return {
            "iteration": self.iteration,
            "loss": self.loss,
            "content": self.content,
            "style": self.style,
            "tv": self.tv,
            "elapsed": self.elapsed,
        }


@dataclass(frozen=True)
class TransferResult:
    image: np.ndarray  # best (lowest total loss) image, HxWx3 uint8
    best_iteration: int
    best_loss: float
    iterations_done: int  # the last iteration's number (counting a resumed state's too)
    stopped: bool  # should_stop() ended it early
    history: list[dict[str, Any]] = field(repr=False)  # this call's iterations only
    weights: str  # which weights made it
    params: TransferParams  # with .weights set to the weights actually used
    seconds: float


# ---- style Gram cache -----------------------------------------------------------------------

# (image digest, shape, layers, weights, precision) -> one Gram matrix per layer
_STYLE_CACHE: OrderedDict[
    tuple[str, tuple[int, ...], tuple[str, ...], str, str], tuple[np.ndarray, ...]
] = OrderedDict()
_STYLE_LOCK = threading.Lock()
style_cache_stats = {"hits": 0, "misses": 0}


def _style_grams(
    extractor: Extractor, style01: np.ndarray, layers: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    """Gram targets of one style image, from a small LRU shared by the jobs of a process."""
    digest = hashlib.sha256(np.ascontiguousarray(style01).tobytes()).hexdigest()
    key = (digest, style01.shape, layers, weights_key(extractor.weights), extractor.precision)
    with _STYLE_LOCK:
        cached = _STYLE_CACHE.get(key)
        if cached is not None:
            _STYLE_CACHE.move_to_end(key)
            style_cache_stats["hits"] += 1
            return cached
    feats = step_tf.get_features(extractor)(ops.convert_to_tensor(style01[None]))
    grams = tuple(np.asarray(ops.convert_to_numpy(gram_matrix(feats[n]))) for n in layers)
    with _STYLE_LOCK:
        style_cache_stats["misses"] += 1
        _STYLE_CACHE[key] = grams
        while len(_STYLE_CACHE) > STYLE_CACHE_SIZE:
            _STYLE_CACHE.popitem(last=False)
    return grams


def clear_style_cache() -> None:
    with _STYLE_LOCK:
        _STYLE_CACHE.clear()


# ---- preparation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """Everything the loop needs, prepared once per job."""

    extractor: Extractor
    params: TransferParams
    content: np.ndarray  # float32 HxWx3 in [0, 1] (resized)
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    content_lw: np.ndarray
    style_lw: np.ndarray
    content_targets: tuple[Any, ...]  # backend tensors
    style_targets: tuple[Any, ...]
    hyper: np.ndarray


def _active(layers: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """Layers with a weight above 0 (a zero-weight layer would only cost a forward pass)."""
    kept = [(n, w) for n, w in layers if w > 0]
    return tuple(n for n, _ in kept), np.array([w for _, w in kept], dtype=np.float32)


def _prepare_content(content: np.ndarray, params: TransferParams, min_side: int) -> np.ndarray:
    arr = imageio.resize_max(imageio.as_rgb_array(content), params.max_size)
    if min(arr.shape[:2]) < min_side:
        raise ValueError(
            f"content image is {arr.shape[1]}x{arr.shape[0]} px after resizing; the deepest "
            f"layer used needs at least {min_side} px on each side"
        )
    return imageio.to_float01(arr)


def _prepare_style(style: np.ndarray, longest: int, min_side: int) -> np.ndarray:
    """Style resized to ``longest`` (style_scale x the content's longest side), then enlarged
    if needed so its shortest side reaches what the deepest layer needs."""
    arr = imageio.resize_longest(imageio.as_rgb_array(style), max(1, longest))
    short = min(arr.shape[:2])
    if short < min_side:
        arr = imageio.resize_longest(arr, math.ceil(max(arr.shape[:2]) * min_side / short))
    return imageio.to_float01(arr)


def _prepare(
    content: np.ndarray, styles: Sequence[np.ndarray], params: TransferParams, weights: str
) -> _Job:
    # valid (types, ranges, layer names); a service's Limits were applied when it took the job
    params.validate(n_styles=len(styles), allow_weight_paths=True)
    content_layers, content_lw = _active(params.content_layers)
    style_layers, style_lw = _active(params.style_layers)
    extractor = get_extractor(weights, content_layers + style_layers, params.precision)
    content01 = _prepare_content(content, params, extractor.min_side)
    longest = round(params.style_scale * max(content01.shape[:2]))

    features = step_tf.get_features(extractor)(ops.convert_to_tensor(content01[None]))
    content_targets = tuple(features[n] for n in content_layers)

    blend = params.blend(len(styles))
    blended: list[np.ndarray] | None = None
    for style, w in zip(styles, blend, strict=True):
        if w == 0:
            continue  # a zero blend weight adds nothing: skip its forward pass
        grams = _style_grams(
            extractor, _prepare_style(style, longest, extractor.min_side), style_layers
        )
        if blended is None:
            blended = [np.float32(w) * g for g in grams]
        else:
            blended = [b + np.float32(w) * g for b, g in zip(blended, grams, strict=True)]
    assert blended is not None  # validate(): at least one style with a weight above 0
    return _Job(
        extractor=extractor,
        params=replace(params, weights=weights),
        content=content01,
        content_layers=content_layers,
        style_layers=style_layers,
        content_lw=content_lw,
        style_lw=style_lw,
        content_targets=content_targets,
        style_targets=tuple(ops.convert_to_tensor(g) for g in blended),
        hyper=hyper_vector(params),
    )


def _initial_image(job: _Job) -> np.ndarray:
    if job.params.init == "noise":
        rng = np.random.default_rng(job.params.seed)
        return rng.random(job.content.shape, dtype=np.float32)
    return job.content


def _start_state(
    job: _Job, resume: EngineState | None
) -> tuple[Any, Any, Any, Any, float, int, float]:
    """(x, m, v, best x, best loss, best iteration, elapsed) the loop starts from: the
    initial image with Adam at rest, or a resumed state."""
    if resume is None:
        x = ops.convert_to_tensor(_initial_image(job)[None])
        return x, ops.zeros_like(x), ops.zeros_like(x), x, math.inf, 0, 0.0
    resume.check(job.content.shape)
    if resume.iteration >= job.params.iterations:
        raise StateError(
            f"cannot resume at iteration {resume.iteration} of {job.params.iterations}"
        )
    x, m, v, best_x = (
        ops.convert_to_tensor(a[None])
        for a in (resume.image, resume.adam_m, resume.adam_v, resume.best_image)
    )
    return x, m, v, best_x, resume.best_loss, resume.best_iteration, resume.elapsed


def _finish(x01: np.ndarray, job: _Job) -> np.ndarray:
    """Float [0, 1] image -> uint8, with the content's colours if preserve_colors."""
    if job.params.preserve_colors:
        x01 = imageio.preserve_colors(x01, job.content)
    return imageio.to_uint8(x01)


# ---- the loop -------------------------------------------------------------------------------


class _Step(NamedTuple):
    """One dispatched step: its number, the image it started from, what it returned."""

    k: int
    previous: Any
    x: Any
    m: Any
    v: Any
    losses: Any  # [total, content, style, tv], still on the device until read


@dataclass
class _Loop:
    """The loop's side of finished steps: read the losses, check them, keep the best, report,
    checkpoint, ask whether to stop."""

    job: _Job
    best_x: Any
    best_loss: float
    best_iteration: int
    elapsed_before: float
    on_iteration: Callable[[IterationReport], None] | None
    should_stop: Callable[[], bool] | None
    checkpoint_due: Callable[[int], bool] | None
    on_checkpoint: Callable[[EngineState], None] | None
    done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    n: int = field(init=False)  # the job's iterations and snapshot_every, looked up once
    every: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = self.job.params.iterations
        self.every = self.job.params.snapshot_every

    def finish(self, s: _Step) -> bool:
        """Iteration ``s.k`` is over (its losses are read here, which waits for the step on an
        asynchronous device); True when the caller wants the loop to stop after it."""
        total, c_loss, s_loss, tv_loss = step_tf.host_floats(s.losses)
        elapsed = self.elapsed_before + (time.perf_counter() - self.started)
        k, n, every = s.k, self.n, self.every
        self.done = k
        if not math.isfinite(total):
            raise FloatingPointError(
                f"loss became {total} at iteration {k}; lower learning_rate or the weights"
            )
        is_best = total < self.best_loss
        if is_best:
            # `previous` is the image this loss was measured on; tensors are immutable, so
            # keeping the reference is the copy.
            self.best_x, self.best_loss, self.best_iteration = s.previous, total, k
        render = None
        if self.on_iteration is not None and ((every and k % every == 0) or k == n):
            render = partial(_render, s.x, self.job)
        report = IterationReport(k, total, c_loss, s_loss, tv_loss, elapsed, render, is_best)
        self.history.append(report.as_dict())
        if self.on_iteration is not None:
            self.on_iteration(report)
        if k == n:
            return False
        if self.on_checkpoint is not None and self.checkpoint_due and self.checkpoint_due(k):
            self.on_checkpoint(
                _state(k, s.x, s.m, s.v, self.best_x, self.best_loss, self.best_iteration, elapsed)
            )
        return self.should_stop is not None and self.should_stop()


def _render(x: Any, job: _Job) -> np.ndarray:
    return _finish(np.asarray(ops.convert_to_numpy(x))[0], job)


def transfer(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    *,
    weights: str,
    on_iteration: Callable[[IterationReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    xla: bool = False,
    deterministic: bool | None = None,
    resume: EngineState | None = None,
    checkpoint_due: Callable[[int], bool] | None = None,
    on_checkpoint: Callable[[EngineState], None] | None = None,
    read_behind: bool | None = None,
) -> TransferResult:
    """Stylise ``content`` (HxWx3 uint8 RGB, any size) after ``styles``.

    Content is shrunk to ``params.max_size`` (longest side), each style to
    ``params.style_scale`` x the content's longest side. ``weights`` decides the VGG19
    weights (``params.weights`` is the caller's business); the result records them.
    ``should_stop`` is asked after each iteration's callback, so a cancel takes effect
    within one iteration; the first iteration always runs, so a result always has a loss.
    Same inputs, params and machine -> bit-identical output.

    ``xla`` and ``deterministic`` are the host's knobs, not the job's (see
    :func:`step_tf.get_step`); the engine reads no settings, its callers pass them.

    ``read_behind``: queue step ``k + 1`` before reading step ``k``'s losses to the host, so
    an asynchronous device (a GPU) never waits for the host between steps; ``None`` (the
    default) does so where the backend runs asynchronously (:func:`step_tf.runs_async`).
    Every iteration is still reported once, in order, with the same values; when
    ``should_stop`` says yes after iteration ``k``, the step ``k + 1`` already queued is
    dropped unreported (the result is as if it never ran).

    Checkpoints: after iteration ``k``'s callback (``k`` < ``params.iterations``),
    ``checkpoint_due(k)`` is asked, and if it says yes ``on_checkpoint`` gets the loop's whole
    state (:class:`EngineState`, NumPy copies); when and where to keep it is the caller's
    business. ``resume`` continues from such a state: the loop goes on at its iteration + 1
    with the same image, Adam moments and step, best image and loss, so on the same machine
    and precision the result is bit-identical to the undisturbed run's. The state must come
    from the same inputs and parameters (the caller checks that); a state of another size, or
    one at or past ``params.iterations``, raises :class:`StateError`.
    """
    started = time.perf_counter()
    styles = list(styles)
    job = _prepare(content, styles, params, weights)
    step = step_tf.get_step(
        job.extractor,
        job.content_layers,
        job.style_layers,
        xla=xla,
        deterministic=deterministic,
    )

    n = job.params.iterations
    x, m, v, best_x, best_loss, best_iteration, elapsed_before = _start_state(job, resume)
    first = 1 if resume is None else resume.iteration + 1
    content_targets = list(job.content_targets)
    style_targets = list(job.style_targets)
    content_lw = ops.convert_to_tensor(job.content_lw)
    style_lw = ops.convert_to_tensor(job.style_lw)
    hyper = ops.convert_to_tensor(job.hyper)
    behind = step_tf.runs_async() if read_behind is None else read_behind

    loop = _Loop(
        job, best_x, best_loss, best_iteration, elapsed_before, on_iteration, should_stop,
        checkpoint_due, on_checkpoint, done=first - 1,
    )  # fmt: skip
    stopped = False
    queued: _Step | None = None  # dispatched, its losses not read yet (read_behind)
    for k, t in zip(range(first, n + 1), step_tf.iteration_tensors(first, n), strict=True):
        previous = x
        x, m, v, losses = step(
            x, m, v, t, content_targets, style_targets, content_lw, style_lw, hyper
        )
        current = _Step(k, previous, x, m, v, losses)
        ready, queued = (queued, current) if behind else (current, None)
        if ready is not None and loop.finish(ready):
            stopped = True
            break  # a step queued after `ready` is dropped: as if it never ran
    else:
        if queued is not None:
            loop.finish(queued)  # the last iteration: nothing asked after it

    return TransferResult(
        image=_finish(np.asarray(ops.convert_to_numpy(loop.best_x))[0], job),
        best_iteration=loop.best_iteration,
        best_loss=loop.best_loss,
        iterations_done=loop.done,
        stopped=stopped,
        history=loop.history,
        weights=weights,
        params=job.params,
        seconds=time.perf_counter() - started,
    )


def _state(
    k: int, x: Any, m: Any, v: Any, best_x: Any, best_loss: float, best_iteration: int,
    elapsed: float,
) -> EngineState:  # fmt: skip
    """The loop's state after iteration ``k`` as NumPy float32 copies."""

    def host(t: Any) -> np.ndarray:
        return np.array(ops.convert_to_numpy(t)[0], dtype=np.float32)

    return EngineState(
        iteration=k, image=host(x), adam_m=host(m), adam_v=host(v), best_image=host(best_x),
        best_loss=best_loss, best_iteration=best_iteration, elapsed=elapsed,
    )  # fmt: skip


def evaluate(
    image: np.ndarray,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    *,
    weights: str,
) -> dict[str, float]:
    """The weighted losses of ``image`` against the targets ``transfer`` would use.

    ``image`` must have the size the content gets after resizing. For tests and the
    benchmark (e.g. scoring a bfloat16 result with float32 features).
    """
    job = _prepare(content, list(styles), params, weights)
    img01 = imageio.to_float01(image) if image.dtype == np.uint8 else np.asarray(image, np.float32)
    if img01.shape != job.content.shape:
        raise ValueError(f"image is {img01.shape}, the resized content is {job.content.shape}")
    x = ops.convert_to_tensor(img01[None])
    total, c_loss, s_loss, tv_loss = loss_terms(
        step_tf.get_features(job.extractor)(x),
        x,
        job.content_layers,
        job.style_layers,
        list(job.content_targets),
        list(job.style_targets),
        ops.convert_to_tensor(job.content_lw),
        ops.convert_to_tensor(job.style_lw),
        ops.convert_to_tensor(job.hyper),
    )
    return {
        "total": float(ops.convert_to_numpy(total)),
        "content": float(ops.convert_to_numpy(c_loss)),
        "style": float(ops.convert_to_numpy(s_loss)),
        "tv": float(ops.convert_to_numpy(tv_loss)),
    }


def warm_up(
    weights: str,
    params: TransferParams | None = None,
    *,
    xla: bool = False,
    deterministic: bool | None = None,
) -> None:
    """Build the extractor and trace the step on a tiny image (at worker start).

    The step's signature has dynamic sizes, so this one trace serves the real jobs.
    Raises WeightsUnavailable at start-up rather than on the first job.
    """
    params = params or TransferParams()
    rng = np.random.default_rng(0)
    tiny = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    transfer(
        tiny,
        [tiny[::-1]],
        replace(
            params, iterations=2, max_size=32, style_scale=1.0, style_blend=None, snapshot_every=0
        ),
        weights=weights,
        xla=xla,
        deterministic=deterministic,
    )
