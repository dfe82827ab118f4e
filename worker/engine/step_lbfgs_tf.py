"""The compiled L-BFGS step for TensorFlow (the Adam step's sibling in :mod:`step_tf`).

One ``tf.function`` runs a whole L-BFGS iteration: the two-loop recursion and the line
search's trial evaluations (forward, losses, gradient) inside one graph
(:func:`worker.engine.lbfgs.step`), so nothing goes back to the host between evaluations.
Like the Adam step, sizes and the history length are dynamic in the signature: one trace
serves every job, size and history size. Kept apart from :mod:`step_tf` so either can change
without the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from stylequeue.worker.engine import lbfgs
from stylequeue.worker.engine.extractor import Extractor
from stylequeue.worker.engine.losses import HYPER_FIELDS, loss_terms
from stylequeue.worker.engine.step_tf import ensure_determinism

StepFn = Callable[..., tuple[Any, ...]]

_TRACES = 0


def trace_count() -> int:
    """How many times an L-BFGS function has been traced in this process."""
    return _TRACES


def _signature(extractor: Extractor, content_layers: Sequence[str], style_layers: Sequence[str]):  # type: ignore[no-untyped-def]
    channels = extractor.channels
    return [
        [tf.TensorSpec([1, None, None, channels[n]], tf.float32) for n in content_layers],
        [tf.TensorSpec([channels[n], channels[n]], tf.float32) for n in style_layers],
        tf.TensorSpec([len(content_layers)], tf.float32),
        tf.TensorSpec([len(style_layers)], tf.float32),
        tf.TensorSpec([len(HYPER_FIELDS)], tf.float32),
    ]


def _value_and_grad(
    extractor: Extractor,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    targets: tuple[Any, ...],
) -> lbfgs.ValueAndGrad:
    """image -> ((total, content, style, tv), d total / d image), for use inside a graph."""
    content_targets, style_targets, content_lw, style_lw, hyper = targets

    def value_and_grad(x):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = loss_terms(
                extractor(x), x, content_layers, style_layers,
                content_targets, style_targets, content_lw, style_lw, hyper,
            )  # fmt: skip
        return tf.stack(losses), tape.gradient(losses[0], x)

    return value_and_grad


def get_functions(
    extractor: Extractor,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    *,
    xla: bool = False,
    deterministic: bool | None = None,
) -> tuple[StepFn, StepFn]:
    """``(evaluate, step)`` for this extractor and layer roles (built once, then reused).

    ``evaluate(x, *targets)`` -> ``(losses, grad)``: the starting point's (once per job).
    ``step(x, losses, grad, s_hist, y_hist, rho, count, head, *targets)`` ->
    ``(x, losses, grad, s_hist, y_hist, rho, count, head, evaluations)``; ``targets`` are
    ``(content_targets, style_targets, content_lw, style_lw, hyper)`` as for the Adam step,
    the learning rate (``hyper``) being the first step's largest pixel change.
    """
    key = (tuple(content_layers), tuple(style_layers), xla)
    with extractor.lock:
        evaluate = extractor.steps.get(("tf-lbfgs-evaluate", *key))
        step = extractor.steps.get(("tf-lbfgs-step", *key))
        if evaluate is None or step is None:
            ensure_determinism(deterministic)
            evaluate, step = _build(extractor, tuple(content_layers), tuple(style_layers), xla)
            extractor.steps[("tf-lbfgs-evaluate", *key)] = evaluate
            extractor.steps[("tf-lbfgs-step", *key)] = step
    return evaluate, step


def _build(
    extractor: Extractor,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    xla: bool,
) -> tuple[StepFn, StepFn]:
    image = tf.TensorSpec([1, None, None, 3], tf.float32)
    history = tf.TensorSpec([None, 1, None, None, 3], tf.float32)
    targets = _signature(extractor, content_layers, style_layers)

    @tf.function(input_signature=[image, *targets], jit_compile=xla)
    def evaluate(x, *targets):  # type: ignore[no-untyped-def]
        global _TRACES
        _TRACES += 1
        return _value_and_grad(extractor, content_layers, style_layers, targets)(x)

    state = [
        image,  # x: pixels in [0, 1]
        tf.TensorSpec([4], tf.float32),  # its (total, content, style, tv)
        image,  # its gradient
        image,  # v: running mean of squared gradients (the diagonal's)
        tf.TensorSpec([], tf.int32),  # gradients in v
        history,  # s pairs (ring)
        history,  # y pairs
        tf.TensorSpec([None], tf.float32),  # rho = 1 / s.y
        tf.TensorSpec([], tf.int32),  # pairs held
        tf.TensorSpec([], tf.int32),  # where the next pair goes
    ]

    @tf.function(input_signature=[*state, *targets], jit_compile=xla)
    def step(x, losses, grad, v, n_grads, s_hist, y_hist, rho, count, head, *targets):  # type: ignore[no-untyped-def]
        global _TRACES
        _TRACES += 1
        return lbfgs.step(
            x, losses, grad, v, n_grads, s_hist, y_hist, rho, count, head, hyper=targets[-1],
            value_and_grad=_value_and_grad(extractor, content_layers, style_layers, targets),
        )  # fmt: skip

    compiled: tuple[StepFn, StepFn] = (evaluate, step)  # tf.functions (TensorFlow is untyped)
    return compiled
