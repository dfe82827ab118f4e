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
from keras.backend import standardize_dtype

from stylequeue.shared.params import ParamError, TransferParams
from stylequeue.worker.engine import imageio, optimizers, scales, step_tf
from stylequeue.worker.engine.extractor import Extractor, get_extractor, weights_key
from stylequeue.worker.engine.losses import gram_matrix, hyper_vector, loss_terms
from stylequeue.worker.engine.state import EngineState, StateError

STYLE_CACHE_SIZE = 8  # style Gram sets kept per process (a few MB each at 512 px)
# Losses are read to the host in groups: once the oldest unread step is this old, or
# the group is full. One read and the bookkeeping of several iterations together cost the
# host little more than one (right after a step the caches are cold: bench/RESULTS-loop.md).
GROUP_SECONDS = 0.2
GROUP_MAX = 32  # steps
GROUP_BYTES = 16 * 2**20  # the carries a group holds (float32); two groups live at once


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


def _prepare_content(content: np.ndarray, max_size: int, min_side: int) -> np.ndarray:
    arr = imageio.resize_max(imageio.as_rgb_array(content), max_size)
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
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    weights: str,
    size: int | None = None,
) -> _Job:
    """The job at ``size`` px (a coarse scale's longest side), else at ``params.max_size``."""
    # valid (types, ranges, layer names); a service's Limits were applied when it took the job
    params.validate(n_styles=len(styles), allow_weight_paths=True)
    content_layers, content_lw = _active(params.content_layers)
    style_layers, style_lw = _active(params.style_layers)
    extractor = get_extractor(weights, content_layers + style_layers, params.precision)
    content01 = _prepare_content(content, size or params.max_size, extractor.min_side)
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


def _finish(x01: np.ndarray, job: _Job) -> np.ndarray:
    """Float [0, 1] image -> uint8, with the content's colours if preserve_colors."""
    if job.params.preserve_colors:
        x01 = imageio.preserve_colors(x01, job.content)
    return imageio.to_uint8(x01)


# ---- the loop -------------------------------------------------------------------------------


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
    memory_budget: int | None = None,
    tile: int | None = None,
    on_tile: Callable[[Any], None] | None = None,
    read_behind: bool | None = None,
) -> TransferResult:
    """Stylise ``content`` (HxWx3 uint8 RGB, any size) after ``styles``.

    Content is shrunk to ``params.max_size`` (longest side), each style to
    ``params.style_scale`` x the content's longest side. ``weights`` decides the VGG19
    weights (``params.weights`` is the caller's business); the result records them.
    ``should_stop`` is asked after each iteration's callback, so a cancel takes effect
    within one iteration; the first iteration always runs, so a result always has a loss.
    It is also asked as each step is dispatched (losses are read in groups on the CPU:
    a yes there reads the group at once), so it must be cheap and may be asked more often
    than once an iteration.
    Same inputs, params and machine -> bit-identical output.

    ``params.optimizer`` picks Adam or L-BFGS (:mod:`optimizers`): an Adam iteration reports
    the loss of the image it starts from, an L-BFGS iteration that of the image it ends on
    (so L-BFGS's reported losses fall at every iteration). ``params.scales`` > 1 paints
    coarse to fine (:mod:`scales`): iterations are numbered through all scales, a coarse
    scale's snapshots are enlarged to the final size, and the result is the last scale's
    best image.

    ``xla`` and ``deterministic`` are the host's knobs, not the job's (see
    :func:`step_tf.get_step`); the engine reads no settings, its callers pass them.

    ``read_behind``: queue step ``k + 1`` before reading step ``k``'s losses to the host, so
    an asynchronous device (a GPU) never waits for the host between steps; ``None`` (the
    default) does so where the backend runs asynchronously (:func:`step_tf.runs_async`).
    Otherwise losses are read in groups (``GROUP_SECONDS``: a report may come up to that
    much after its step). Every iteration is still reported once, in order, with the same
    values; when ``should_stop`` says yes after iteration ``k``, the steps already
    dispatched after it (``k + 1`` reading behind; the rest of ``k``'s group) are dropped
    unreported (the result is as if they never ran).

    Checkpoints: after iteration ``k``'s callback (``k`` < ``params.iterations``),
    ``checkpoint_due(k)`` is asked, and if it says yes ``on_checkpoint`` gets the loop's whole
    state (:class:`EngineState`, NumPy copies); when and where to keep it is the caller's
    business. ``resume`` continues from such a state: the loop goes on at its iteration + 1
    with the same image, optimiser state, scale, best image and loss, so on the same machine
    and precision the result is bit-identical to the undisturbed run's. The state must come
    from the same inputs and parameters (the caller checks that); a state of another size, or
    one at or past ``params.iterations``, raises :class:`StateError`.

    Memory (``worker.engine.memory``): given ``memory_budget`` (bytes), a job whose untiled
    run would not fit is run in tiles that do (``worker.engine.tiling``; ``tile`` forces a
    tile core size), reporting each tile to ``on_tile`` and asking ``should_stop`` after
    each; one that fits in no tiling raises :class:`~stylequeue.shared.memory.BudgetError`
    before any work.
    """
    from stylequeue.worker.engine import memory  # the tiled path: its own modules

    layout = memory.plan_job(content, params, memory_budget, tile)
    if layout.tiled:
        tiled: TransferResult = memory.run_tiled(
            content, styles, params, layout, weights=weights, on_iteration=on_iteration,
            on_tile=on_tile, should_stop=should_stop, resume=resume,
            checkpoint_due=checkpoint_due, on_checkpoint=on_checkpoint,
        )  # fmt: skip
        return tiled
    started = time.perf_counter()
    styles = list(styles)
    params.validate(n_styles=len(styles), allow_weight_paths=True)
    final = imageio.resize_max(imageio.as_rgb_array(content), params.max_size).shape[:2]
    plan = scales.plan(max(final), params.scales, params.iterations)
    if resume is not None and resume.iteration >= params.iterations:
        raise StateError(f"cannot resume at iteration {resume.iteration} of {params.iterations}")
    if resume is not None and resume.scale >= len(plan):
        raise StateError(f"a state of scale {resume.scale + 1}, the job has {len(plan)}")
    loop = _Loop(
        on_iteration, should_stop, checkpoint_due, on_checkpoint, params.iterations,
        (final[1], final[0]), resume.elapsed if resume is not None else 0.0,
    )  # fmt: skip
    behind = step_tf.runs_async() if read_behind is None else read_behind
    job: _Job | None = None
    previous_best: np.ndarray | None = None
    for index, stage in enumerate(plan):
        if resume is not None and resume.scale > index:
            continue  # finished before the state was taken
        job = _prepare_scale(content, styles, params, weights, plan, index)
        opt = optimizers.make(
            job.params.optimizer, job.extractor, job.content_layers, job.style_layers,
            _targets(job), history=job.params.lbfgs_history, beta_2=job.params.beta_2,
            xla=xla, deterministic=deterministic,
        )  # fmt: skip
        if resume is not None and resume.scale == index:
            carry = loop.resume(opt, resume, job, stage)
            resume = None
        else:
            start = _initial_image(job) if previous_best is None else scales.upsample(
                previous_best, job.content.shape[:2]
            )  # fmt: skip
            carry = loop.begin(opt, ops.convert_to_tensor(start[None]))
        loop.run(opt, carry, job, index, stage, behind)
        if loop.stopped:
            break
        previous_best = np.asarray(ops.convert_to_numpy(loop.best_x))[0]
    assert job is not None  # plan() has at least one scale
    return TransferResult(
        image=loop.at_final_size(loop.best_x, job),  # stopped in a coarse scale: enlarged
        best_iteration=loop.best_iteration,
        best_loss=loop.best_loss,
        iterations_done=loop.done,
        stopped=loop.stopped,
        history=loop.history,
        weights=weights,
        params=replace(params, weights=weights),
        seconds=time.perf_counter() - started,
    )


def _prepare_scale(
    content: np.ndarray,
    styles: list[np.ndarray],
    params: TransferParams,
    weights: str,
    plan: list[scales.Scale],
    index: int,
) -> _Job:
    """The job at scale ``index`` of ``plan``; a coarse scale too small for the layers says
    which scale it is."""
    try:
        return _prepare(content, styles, params, weights, plan[index].longest)
    except ParamError:
        raise
    except ValueError as exc:
        if index == len(plan) - 1:
            raise
        raise ValueError(
            f"scale {index + 1} of {len(plan)} ({plan[index].longest} px): {exc}; use fewer scales"
        ) from exc


def _targets(job: _Job) -> tuple[Any, ...]:
    """The compiled steps' target arguments: (content targets, style targets, content layer
    weights, style layer weights, hyper-parameters)."""
    return (
        list(job.content_targets),
        list(job.style_targets),
        ops.convert_to_tensor(job.content_lw),
        ops.convert_to_tensor(job.style_lw),
        ops.convert_to_tensor(job.hyper),
    )


class _Step(NamedTuple):
    """One dispatched step: its iteration number, what the optimiser returned (the losses
    still on the device until read) and when the step call returned (``perf_counter``)."""

    k: int
    stepped: optimizers.Stepped
    ended: float


def group_limit(carry: tuple[Any, ...]) -> int:
    """How many finished steps may wait to be read together: each holds its carry (new
    tensors every step), so a group stays within ``GROUP_BYTES`` and ``GROUP_MAX`` (the
    group read last is kept until the next is read: twice that in all)."""
    held: int = sum(
        int(np.dtype(standardize_dtype(t.dtype)).itemsize) * math.prod(int(n) for n in ops.shape(t))
        for t in carry
    )
    return max(1, min(GROUP_MAX, GROUP_BYTES // max(held, 1)))


class _Loop:
    """The iterations of every scale: reports, the best image, checkpoints and stopping.

    The best image is tracked within a scale (losses of two sizes are not comparable): a
    scale starts from the previous one's best, and the result is the last scale's best.
    """

    def __init__(
        self,
        on_iteration: Callable[[IterationReport], None] | None,
        should_stop: Callable[[], bool] | None,
        checkpoint_due: Callable[[int], bool] | None,
        on_checkpoint: Callable[[EngineState], None] | None,
        iterations: int,
        final_size: tuple[int, int],
        elapsed_before: float,
    ) -> None:
        self.on_iteration, self.should_stop = on_iteration, should_stop
        self.checkpoint_due, self.on_checkpoint = checkpoint_due, on_checkpoint
        self.n, self.final_size = iterations, final_size
        self.elapsed_before = elapsed_before
        self.loop_start = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.stopped = False
        self.done = 0
        self.first = 1
        self.best_x: Any = None
        self.best_loss = math.inf
        self.best_iteration = 0
        self.spent: list[_Step] = []  # the last group read, freed when the next is read
        self.behind = False

    def begin(self, opt: optimizers.Optimizer, x: Any) -> tuple[Any, ...]:
        """A scale starts at ``x``: the optimiser at rest, no best image yet."""
        self.best_x, self.best_loss, self.best_iteration = x, math.inf, 0
        return opt.start(x)

    def resume(
        self, opt: optimizers.Optimizer, state: EngineState, job: _Job, stage: scales.Scale
    ) -> tuple[Any, ...]:
        shape = job.content.shape
        state.check(shape)
        if state.scale_start != stage.first - 1:
            raise StateError(f"a state of a scale from {state.scale_start + 1}, not {stage.first}")
        if state.optimizer != opt.name:
            raise StateError(f"a state of {state.optimizer}, the job uses {opt.name}")
        self.best_x = ops.convert_to_tensor(state.best_image[None])
        self.best_loss, self.best_iteration = state.best_loss, state.best_iteration
        self.first = self.done = state.iteration
        self.first += 1
        return opt.restore(state)

    def run(
        self,
        opt: optimizers.Optimizer,
        carry: tuple[Any, ...],
        job: _Job,
        index: int,
        stage: scales.Scale,
        behind: bool,
    ) -> None:
        """Iterations ``max(stage.first, resumed + 1)`` to ``stage.last``.

        Synchronous backend (the CPU): steps are dispatched back to back and their losses
        read in groups (``GROUP_*``; at once when ``should_stop`` says yes), then each
        iteration is finished in order, exactly as if it had been read at once.
        ``behind`` (an asynchronous device): step ``k + 1`` is queued before step ``k``'s
        losses are read, one at a time, so the device never waits for the host (a group
        would leave it one step while the host finished the rest). Either way a stop after
        ``k`` drops the later steps, unreported, as if they never ran."""
        first = max(self.first, stage.first)
        ts = step_tf.iteration_tensors(first - stage.first + 1, stage.last - stage.first + 1)
        keep = 1 if behind else 0  # steps left queued when a group is read
        limit = 2 if behind else group_limit(carry)
        self.behind = behind
        pending: list[_Step] = []  # dispatched, their losses not read yet
        try:
            for k, t in zip(range(first, stage.last + 1), ts, strict=True):
                stepped = opt.step(carry, t)
                carry = stepped.carry
                now = time.perf_counter()
                pending.append(_Step(k, stepped, now))
                if self._group_due(pending, keep, limit, now) and self._finish_group(
                    pending, len(pending) - keep, opt, job, index, stage
                ):
                    self.stopped = True
                    return
            if pending and self._finish_group(pending, len(pending), opt, job, index, stage):
                self.stopped = True
        finally:
            self.spent = []  # a scale's tensors go with it

    def _group_due(self, pending: list[_Step], keep: int, limit: int, now: float) -> bool:
        """Whether the unread steps (but the ``keep`` newest) are read now: the group is
        full or its oldest step has waited ``GROUP_SECONDS``, or a stop is asked (at once)."""
        return len(pending) > keep and (
            len(pending) >= limit
            or now - pending[0].ended >= GROUP_SECONDS
            or (self.should_stop is not None and self.should_stop())
        )

    def _finish_group(
        self,
        pending: list[_Step],
        n: int,
        opt: optimizers.Optimizer,
        job: _Job,
        index: int,
        stage: scales.Scale,
    ) -> bool:
        """The first ``n`` pending steps' losses read, then each finished in order (and
        removed); True when the caller asks to stop (the rest are dropped). Only the first
        read after a step is slow (caches cold), so reading them one after another costs
        little more than one read (a ``tf.stack`` first would cost an eager op more)."""
        # The previous group's tensors are freed here, before this group's callbacks: freeing
        # a tensor lets another thread take the GIL, and a writer those callbacks wake would
        # then hold up the loop for milliseconds (bench/RESULTS-loop.md).
        self.spent.clear()
        group = pending[:n]
        del pending[:n]
        rows = []
        for i, s in enumerate(group):
            rows.append(step_tf.host_floats(s.stepped.losses))
            if self.behind:  # the step ended on the device when its losses could be read
                group[i] = s._replace(ended=time.perf_counter())
        for s, row in zip(group, rows, strict=True):
            if self._finish(s, row, opt, job, index, stage):
                pending.clear()
                return True
        self.spent = group
        return False

    def _finish(
        self,
        s: _Step,
        losses: list[float],
        opt: optimizers.Optimizer,
        job: _Job,
        index: int,
        stage: scales.Scale,
    ) -> bool:
        """Iteration ``s.k`` is over (``losses`` its values on the host): the best kept,
        reported, checkpointed if due; True when the caller asks to stop after it."""
        k, stepped = s.k, s.stepped
        total, c_loss, s_loss, tv_loss = losses
        elapsed = self.elapsed_before + (s.ended - self.loop_start)
        self.done = k
        if not math.isfinite(total):
            raise FloatingPointError(
                f"loss became {total} at iteration {k}; lower learning_rate or the weights"
            )
        is_best = total < self.best_loss
        if is_best:
            # tensors are immutable, so keeping the reference is the copy
            self.best_x, self.best_loss, self.best_iteration = stepped.measured, total, k
        render = None
        every = job.params.snapshot_every
        if self.on_iteration is not None and ((every and k % every == 0) or k == self.n):
            render = partial(self.at_final_size, opt.image(stepped.carry), job)
        report = IterationReport(k, total, c_loss, s_loss, tv_loss, elapsed, render, is_best)
        self.history.append(report.as_dict())
        if self.on_iteration is not None:
            self.on_iteration(report)
        if k >= self.n:
            return False
        if self._checkpoint_due(k):
            assert self.on_checkpoint is not None
            self.on_checkpoint(self._state(k, opt, stepped.carry, index, stage, elapsed))
        return self.should_stop is not None and self.should_stop()

    def _checkpoint_due(self, k: int) -> bool:
        return (
            self.on_checkpoint is not None
            and self.checkpoint_due is not None
            and self.checkpoint_due(k)
        )

    def at_final_size(self, x: Any, job: _Job) -> np.ndarray:
        """The image after the update, at the final size (a coarse scale's is enlarged)."""
        image = _finish(np.asarray(ops.convert_to_numpy(x))[0], job)
        return imageio.resize_to(image, self.final_size)

    def _state(
        self,
        k: int,
        opt: optimizers.Optimizer,
        carry: tuple[Any, ...],
        index: int,
        stage: scales.Scale,
        elapsed: float,
    ) -> EngineState:
        """The loop's state after iteration ``k`` as NumPy float32 copies."""

        def host(t: Any) -> np.ndarray:
            return np.array(ops.convert_to_numpy(t)[0], dtype=np.float32)

        return EngineState(
            iteration=k, image=host(opt.image(carry)), best_image=host(self.best_x),
            best_loss=self.best_loss, best_iteration=self.best_iteration, elapsed=elapsed,
            scale=index, scale_start=stage.first - 1, **opt.state_fields(carry),
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
