"""The one TensorFlow-specific piece of the engine: the compiled step and forward pass.

Everything else (losses, Adam, the loop) is ``keras.ops`` / NumPy. A JAX or PyTorch backend
needs its own version of this module only (and ``core`` importing it): ``get_step`` returning
a function with the same pure signature (state in, state out) and ``get_features``.

On the CPU build machine a graph-mode ``tf.function`` beat ``jit_compile=True`` (XLA's CPU
convolutions lost to oneDNN's; figures in bench/RESULTS.md), so XLA is off unless the
caller passes ``xla=True`` (the worker and the CLI do when ``STYLEQUEUE_ENGINE_XLA`` is set).
Like the rest of the engine, nothing here reads settings: the caller passes its knobs in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import tensorflow as tf

from stylequeue.worker.engine.extractor import Extractor
from stylequeue.worker.engine.losses import HYPER_FIELDS, adam_update, loss_terms

StepFn = Callable[..., tuple[Any, Any, Any, Any]]

_TRACES = 0
_DETERMINISM_LOCK = threading.Lock()
_DETERMINISM_ON = False


def trace_count() -> int:
    """How many times a step has been traced in this process (tests: no retrace per job)."""
    return _TRACES


def ensure_determinism(wanted: bool | None = None) -> None:
    """Make seeded runs repeat bit for bit on a GPU too.

    ``wanted``: True always, False never, None (auto) only where a GPU is visible: CPU
    kernels here are deterministic already (tested with the switch off), but GPU reductions
    and some cuDNN algorithms are not without it. Op determinism is process-wide and cannot
    be turned off once on; it makes unseeded ``tf.random`` ops raise (the engine has none;
    Keras's seeded random is unaffected). Measured on the CPU build machine: no slowdown.
    The worker and the CLI pass ``STYLEQUEUE_ENGINE_DETERMINISTIC`` (auto / yes / no) here.
    """
    global _DETERMINISM_ON
    with _DETERMINISM_LOCK:
        if _DETERMINISM_ON:
            return
        if wanted is None:
            wanted = bool(tf.config.list_physical_devices("GPU"))
        if wanted:
            tf.config.experimental.enable_op_determinism()
            _DETERMINISM_ON = True


def get_step(
    extractor: Extractor,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    *,
    xla: bool = False,
    deterministic: bool | None = None,
) -> StepFn:
    """The compiled step for this extractor and layer roles (built once, then reused).

    ``xla`` compiles it with XLA (``jit_compile``); ``deterministic`` goes to
    :func:`ensure_determinism` the first time a step is built.

    ``step(x, m, v, t, content_targets, style_targets, content_lw, style_lw, hyper)`` ->
    ``(x', m', v', [total, content, style, tv])``: forward, losses, gradient, Adam and the
    clip to [0, 1] in ONE graph. Spatial sizes are dynamic in the signature, so one trace
    serves every job and size; weights and hyper-parameters are tensors for the same reason.
    """
    key = ("tf-step", tuple(content_layers), tuple(style_layers), xla)
    with extractor.lock:
        fn = extractor.steps.get(key)
        if fn is None:
            ensure_determinism(deterministic)
            fn = extractor.steps[key] = _build_step(
                extractor, tuple(content_layers), tuple(style_layers), xla
            )
    return fn


def _build_step(
    extractor: Extractor,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    xla: bool,
) -> StepFn:
    image = tf.TensorSpec([1, None, None, 3], tf.float32)
    channels = extractor.channels
    signature = [
        image,  # x: pixels in [0, 1]
        image,  # m: Adam first moment
        image,  # v: Adam second moment
        tf.TensorSpec([], tf.float32),  # t: 1-based iteration
        [tf.TensorSpec([1, None, None, channels[n]], tf.float32) for n in content_layers],
        [tf.TensorSpec([channels[n], channels[n]], tf.float32) for n in style_layers],
        tf.TensorSpec([len(content_layers)], tf.float32),
        tf.TensorSpec([len(style_layers)], tf.float32),
        tf.TensorSpec([len(HYPER_FIELDS)], tf.float32),
    ]

    # Unannotated on purpose: tensors in, tensors out, and tf.function (untyped) wraps it.
    @tf.function(input_signature=signature, jit_compile=xla)
    def step(x, m, v, t, content_targets, style_targets, content_lw, style_lw, hyper):  # type: ignore[no-untyped-def]
        global _TRACES
        _TRACES += 1  # Python side effect: runs at trace time only
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = loss_terms(
                extractor(x),
                x,
                content_layers,
                style_layers,
                content_targets,
                style_targets,
                content_lw,
                style_lw,
                hyper,
            )
        grad = tape.gradient(losses[0], x)
        x, m, v = adam_update(x, grad, m, v, t, hyper)
        return x, m, v, tf.stack(losses)

    compiled: StepFn = step  # a tf.function (TensorFlow is untyped)
    return compiled


def iteration_tensors(first: int, last: int, chunk: int = 1024) -> Iterator[Any]:
    """The step's ``t`` for iterations ``first..last``: float32 scalar tensors made a chunk at
    a time by one op. On the CPU the first TensorFlow calls after a step are the slow ones
    (caches cold: some 40 us each here, against 4 us warm), so the loop makes one call per
    iteration (reading the losses), not two."""
    for start in range(first, last + 1, chunk):
        stop = min(start + chunk, last + 1)
        yield from tf.unstack(tf.range(start, stop, dtype=tf.float32))


def host_floats(tensor: Any) -> list[float]:
    """A small tensor's values on the host (waits for the step that computes them)."""
    values: list[float] = tensor.numpy().tolist()
    return values


@lru_cache(maxsize=1)
def runs_async() -> bool:
    """Whether a step call returns before the device has done the step: on a GPU the
    kernels are queued on its stream and the call returns at once; on the CPU TensorFlow
    runs the step in the call (eager execution is synchronous by default), so reading the
    losses one step behind gains nothing there."""
    return bool(tf.config.list_logical_devices("GPU"))


def get_features(extractor: Extractor) -> Callable[[Any], dict[str, Any]]:
    """A compiled forward pass (any size) for targets and evaluation.

    Targets and :func:`worker.engine.core.evaluate` both go through it, so the content image
    scores a content loss of exactly 0 against its own targets.
    """
    with extractor.lock:
        fn = extractor.steps.get("tf-features")
        if fn is None:
            fn = extractor.steps["tf-features"] = tf.function(
                lambda x: extractor(x),
                input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
            )
    return fn
